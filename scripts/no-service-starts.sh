#!/bin/sh
# Run a command (an apt-get install) so that the packages it installs start no service.
#
#   scripts/no-service-starts.sh apt-get install -y prometheus postgresql
#
# Debian's maintainer scripts start a package's service through invoke-rc.d/deb-systemd-invoke,
# which first ask /usr/sbin/policy-rc.d; exit status 101 means "action forbidden". When no
# policy-rc.d exists, one is written for the duration of the command and removed afterwards (also
# when the command fails or is interrupted); an existing one (the administrator's, or Docker's)
# is left exactly as it is. The services stay enabled for the next boot; nothing is stopped.
set -eu
policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
marker="# written by parawatt scripts/no-service-starts.sh"
if [ ! -e "$policy" ] || grep -qxF "$marker" "$policy" 2>/dev/null; then
  # (a file with our marker is a leftover of a run that was killed: ours to remove)
  printf '#!/bin/sh\n%s\nexit 101\n' "$marker" > "$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
  trap 'exit 130' INT TERM
fi
"$@"
