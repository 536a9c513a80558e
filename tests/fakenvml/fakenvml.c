/* A fake libnvidia-ml.so.1: the NVML entry points nvidia-ml-py calls for parawatt's daemon.
 *
 * Configured by environment variables read at nvmlInitWithFlags:
 *   FAKENVML_COUNT=N            number of GPUs (default 2)
 *   FAKENVML_INIT_ERROR=code    nvmlInit fails with this nvmlReturn_t (e.g. 9 driver not loaded)
 *   FAKENVML_NO_ENERGY=i,j      these GPUs lack nvmlDeviceGetTotalEnergyConsumption
 *   FAKENVML_NO_INSTANT=i,j     these GPUs lack the NVML_FI_DEV_POWER_INSTANT field
 *   FAKENVML_UNSUPPORTED=fn,fn  these functions return NVML_ERROR_NOT_SUPPORTED on every GPU
 *   FAKENVML_LOST=i:K           GPU i falls off the bus after K calls of nvmlDeviceGetPowerUsage
 *                               (one per daemon reading): every call on it then returns
 *                               NVML_ERROR_GPU_IS_LOST
 * Values: GPU i draws (100 + 10 i) W plus a small ramp, the energy counter advances 2 J per
 * reading, temperature 40 + i C, SM clock 1410 MHz, memory clock 1215 MHz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_FI_DEV_POWER_INSTANT 186
#define NVML_VALUE_TYPE_UNSIGNED_INT 1
#define MAX_GPUS 16

typedef struct {
    int index;
    int no_energy, no_instant;
    long lost_after; /* -1: never */
    long power_reads;
} fake_gpu_t;
typedef fake_gpu_t *nvmlDevice_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef union {
    double dVal; unsigned int uiVal; unsigned long ulVal; unsigned long long ullVal;
    long long sllVal; int siVal; unsigned short usVal;
} nvmlValue_t;
typedef struct {
    uint32_t fieldId, scopeId;
    int64_t timestamp, latencyUsec;
    unsigned int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

static fake_gpu_t gpus[MAX_GPUS];
static unsigned int gpu_count;
static int initialized;
static char unsupported[1024];

static int in_list(const char *list, int i) {
    char buf[256];
    if (!list) return 0;
    snprintf(buf, sizeof buf, ",%s,", list);
    char needle[16];
    snprintf(needle, sizeof needle, ",%d,", i);
    return strstr(buf, needle) != NULL;
}

static int is_unsupported(const char *fn) {
    char needle[128];
    snprintf(needle, sizeof needle, ",%s,", fn);
    return strstr(unsupported, needle) != NULL;
}

/* Common prologue of every per-device call. */
static nvmlReturn_t check(nvmlDevice_t d, const char *fn) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!d) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->lost_after >= 0 && d->power_reads >= d->lost_after) return NVML_ERROR_GPU_IS_LOST;
    if (is_unsupported(fn)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}
#define CHECK(d) do { nvmlReturn_t r_ = check((d), __func__); if (r_) return r_; } while (0)

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    const char *err = getenv("FAKENVML_INIT_ERROR");
    if (err && *err) return atoi(err);
    const char *count = getenv("FAKENVML_COUNT");
    gpu_count = count ? (unsigned)atoi(count) : 2;
    if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
    const char *lost = getenv("FAKENVML_LOST");
    int lost_gpu = -1; long lost_after = -1;
    if (lost && sscanf(lost, "%d:%ld", &lost_gpu, &lost_after) != 2) lost_gpu = -1;
    snprintf(unsupported, sizeof unsupported, ",%s,",
             getenv("FAKENVML_UNSUPPORTED") ? getenv("FAKENVML_UNSUPPORTED") : "");
    for (unsigned i = 0; i < gpu_count; i++) {
        gpus[i].index = (int)i;
        gpus[i].no_energy = in_list(getenv("FAKENVML_NO_ENERGY"), (int)i);
        gpus[i].no_instant = in_list(getenv("FAKENVML_NO_INSTANT"), (int)i);
        gpus[i].lost_after = ((int)i == lost_gpu) ? lost_after : -1;
        gpus[i].power_reads = 0;
    }
    initialized = 1;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { initialized = 0; return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Fake NVML error";
    }
}

static nvmlReturn_t copy_str(char *out, unsigned int len, const char *s) {
    if (strlen(s) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, s);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int len) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_str(version, len, "999.99-fake");
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    *count = gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (index >= gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    CHECK(d);
    return copy_str(name, len, "Fake NVIDIA A100-SXM4-40GB");
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    CHECK(d);
    char buf[96];
    snprintf(buf, sizeof buf, "GPU-fa4e0000-0000-0000-0000-%012d", d->index);
    return copy_str(uuid, len, buf);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    CHECK(d);
    memset(pci, 0, sizeof *pci);
    pci->bus = 0x10 + (unsigned)d->index;
    snprintf(pci->busId, sizeof pci->busId, "00000000:%02X:00.0", pci->bus);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0", pci->bus);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *limit_mw) {
    CHECK(d);
    *limit_mw = 400000;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *mem) {
    CHECK(d);
    mem->total = 40ULL << 30;
    mem->used = (1ULL << 30) * (unsigned)(d->index + 1);
    mem->free = mem->total - mem->used;
    return NVML_SUCCESS;
}

static unsigned int power_mw(nvmlDevice_t d) {
    return 100000u + 10000u * (unsigned)d->index + 100u * (unsigned)(d->power_reads % 10);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    CHECK(d);
    d->power_reads++;
    *mw = power_mw(d);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    CHECK(d);
    if (d->no_energy) return NVML_ERROR_NOT_SUPPORTED;
    *mj = 1000000ULL * (unsigned)(d->index + 1) + 2000ULL * (unsigned long long)d->power_reads;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    CHECK(d);
    for (int i = 0; i < count; i++) {
        values[i].timestamp = 0;
        values[i].latencyUsec = 0;
        if (values[i].fieldId == NVML_FI_DEV_POWER_INSTANT && !d->no_instant) {
            values[i].valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            values[i].value.uiVal = power_mw(d) + 500u;
            values[i].nvmlReturn = NVML_SUCCESS;
        } else {
            values[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    CHECK(d);
    u->gpu = 50u + (unsigned)d->index;
    u->memory = 20u;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *temp) {
    CHECK(d);
    (void)sensor;
    *temp = 40u + (unsigned)d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    CHECK(d);
    *mhz = type == 1 ? 1410u : 1215u; /* NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2 */
    return NVML_SUCCESS;
}
