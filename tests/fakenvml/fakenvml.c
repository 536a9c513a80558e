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
 *   FAKENVML_FLAKY=i,j          the instant-power field of these GPUs fails (per-field return
 *                               NVML_ERROR_TIMEOUT, the call itself succeeds) on every third
 *                               reading (power_reads % 3 == 2)
 *   FAKENVML_VALUE_TYPE=t       value type the instant-power field reports (default 1, unsigned
 *                               int; 3 = unsigned long long, 0 = double; others: garbage)
 *   FAKENVML_MIG=i,j            these GPUs are in MIG mode with two instances each (UUIDs
 *                               MIG-fa4e0000-0000-0000-<i>-00000000000<k>); a GPU in MIG mode has
 *                               no utilization, a MIG instance no power or energy
 *   FAKENVML_NO_NAME=i,j        nvmlDeviceGetName fails (NVML_ERROR_UNKNOWN) on these GPUs
 *   FAKENVML_COUNTER_MS=P       the energy counter advances on a clock instead: 1 mJ-resolution
 *                               steps every P ms since init, (100 + 10 i) W x P ms each
 * Values: GPU i draws (100 + 10 i) W plus a small ramp (module scope: 250 W more; memory scope:
 * not supported), the energy counter advances 2 J per reading, temperature 40 + i C, SM clock
 * 1410 MHz, memory clock 1215 MHz. Init and shutdown are counted like NVML's: each nvmlShutdown
 * undoes one init, and one too many returns NVML_ERROR_UNINITIALIZED.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999
#define NVML_FI_DEV_POWER_INSTANT 186
#define NVML_POWER_SCOPE_GPU 0
#define NVML_POWER_SCOPE_MODULE 1
#define MAX_GPUS 16
#define MIG_PER_GPU 2

typedef struct fake_gpu {
    int index;
    int no_energy, no_instant, flaky, mig, no_name;
    long lost_after; /* -1: never */
    long power_reads;
    struct fake_gpu *parent; /* a MIG instance: its GPU; NULL for a GPU */
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
static fake_gpu_t migs[MAX_GPUS][MIG_PER_GPU];
static unsigned int gpu_count;
static int initialized; /* init count, like NVML's */
static unsigned int value_type = 1;
static long counter_ms; /* FAKENVML_COUNTER_MS: 0 = the counter advances per reading */
static struct timespec init_time;
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
    fake_gpu_t *gpu = d->parent ? d->parent : d;
    if (gpu->lost_after >= 0 && gpu->power_reads >= gpu->lost_after) return NVML_ERROR_GPU_IS_LOST;
    if (is_unsupported(fn)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}
/* Per-GPU readings that a MIG instance does not have. */
#define CHECK_GPU(d) do { CHECK(d); if ((d)->parent) return NVML_ERROR_NOT_SUPPORTED; } while (0)
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
    const char *vt = getenv("FAKENVML_VALUE_TYPE");
    value_type = vt && *vt ? (unsigned)atoi(vt) : 1;
    const char *cm = getenv("FAKENVML_COUNTER_MS");
    counter_ms = cm && *cm ? atol(cm) : 0;
    clock_gettime(CLOCK_MONOTONIC, &init_time);
    for (unsigned i = 0; i < gpu_count; i++) {
        memset(&gpus[i], 0, sizeof gpus[i]);
        gpus[i].index = (int)i;
        gpus[i].no_energy = in_list(getenv("FAKENVML_NO_ENERGY"), (int)i);
        gpus[i].no_instant = in_list(getenv("FAKENVML_NO_INSTANT"), (int)i);
        gpus[i].flaky = in_list(getenv("FAKENVML_FLAKY"), (int)i);
        gpus[i].mig = in_list(getenv("FAKENVML_MIG"), (int)i);
        gpus[i].no_name = in_list(getenv("FAKENVML_NO_NAME"), (int)i);
        gpus[i].lost_after = ((int)i == lost_gpu) ? lost_after : -1;
        for (int k = 0; k < MIG_PER_GPU; k++) {
            memset(&migs[i][k], 0, sizeof migs[i][k]);
            migs[i][k].index = k;
            migs[i][k].lost_after = -1;
            migs[i][k].parent = &gpus[i];
        }
    }
    initialized++;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
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
    if (d->no_name) return NVML_ERROR_UNKNOWN;
    return copy_str(name, len, "Fake NVIDIA A100-SXM4-40GB");
}

static void uuid_of(nvmlDevice_t d, char *buf, size_t len) {
    if (d->parent)
        snprintf(buf, len, "MIG-fa4e0000-0000-0000-%04d-%012d", d->parent->index, d->index);
    else
        snprintf(buf, len, "GPU-fa4e0000-0000-0000-0000-%012d", d->index);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    CHECK(d);
    char buf[96];
    uuid_of(d, buf, sizeof buf);
    return copy_str(uuid, len, buf);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    char buf[96];
    for (unsigned i = 0; i < gpu_count; i++) {
        uuid_of(&gpus[i], buf, sizeof buf);
        if (!strcmp(buf, uuid)) { *device = &gpus[i]; return NVML_SUCCESS; }
        for (int k = 0; gpus[i].mig && k < MIG_PER_GPU; k++) {
            uuid_of(&migs[i][k], buf, sizeof buf);
            if (!strcmp(buf, uuid)) { *device = &migs[i][k]; return NVML_SUCCESS; }
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    CHECK_GPU(d);
    *current = *pending = (unsigned)d->mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *is_mig) {
    CHECK(d);
    *is_mig = d->parent != NULL;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t d, nvmlDevice_t *gpu) {
    CHECK(d);
    if (!d->parent) return NVML_ERROR_INVALID_ARGUMENT;
    *gpu = d->parent;
    return NVML_SUCCESS;
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
    CHECK_GPU(d);
    d->power_reads++;
    *mw = power_mw(d);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    CHECK_GPU(d);
    if (d->no_energy) return NVML_ERROR_NOT_SUPPORTED;
    if (counter_ms > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ms = (now.tv_sec - init_time.tv_sec) * 1000LL
                       + (now.tv_nsec - init_time.tv_nsec) / 1000000LL;
        unsigned long long ticks = (unsigned long long)(ms / counter_ms);
        *mj = 1000000ULL * (unsigned)(d->index + 1)
              + ticks * (unsigned long long)(100 + 10 * d->index) * (unsigned long long)counter_ms;
        return NVML_SUCCESS;
    }
    *mj = 1000000ULL * (unsigned)(d->index + 1) + 2000ULL * (unsigned long long)d->power_reads;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    CHECK_GPU(d);
    for (int i = 0; i < count; i++) {
        values[i].timestamp = 0;
        values[i].latencyUsec = 0;
        unsigned int scope = values[i].scopeId;
        if (values[i].fieldId != NVML_FI_DEV_POWER_INSTANT || d->no_instant ||
            (scope != NVML_POWER_SCOPE_GPU && scope != NVML_POWER_SCOPE_MODULE)) {
            values[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        if (d->flaky && d->power_reads % 3 == 2) {
            values[i].nvmlReturn = NVML_ERROR_TIMEOUT;
            continue;
        }
        unsigned int mw = power_mw(d) + 500u + (scope == NVML_POWER_SCOPE_MODULE ? 250000u : 0u);
        values[i].valueType = value_type;
        memset(&values[i].value, 0xA5, sizeof values[i].value); /* garbage for unknown types */
        switch (value_type) {
        case 0: values[i].value.dVal = mw; break;
        case 1: values[i].value.uiVal = mw; break;
        case 3: values[i].value.ullVal = mw; break;
        }
        values[i].nvmlReturn = NVML_SUCCESS;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    CHECK(d);
    if (d->mig) return NVML_ERROR_NOT_SUPPORTED; /* as on a real GPU in MIG mode */
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
