#!/usr/bin/env bash
# deploy/: the environment file names every sparkled flag (FLAGS_<name>, abseil --tryfromenv),
# the unit's --tryfromenv list names exactly those flags, and `systemd-analyze verify` accepts
# the unit (with ExecStart pointed at the built binary). Exit 77 (ctest: skipped) only for the
# verify step when systemd-analyze is not installed.
# usage: deploy_test.sh SOURCE_DIR SPARKLED_BINARY
set -euo pipefail
src=$1
sparkled=$2
unit=$src/deploy/sparkled.service
env=$src/deploy/sparkled.env

flags=$(grep -oP '^ABSL_FLAG\([^,]+,\s*\K[a-z0-9_]+' "$src/server/main.cc" | sort)
env_flags=$(grep -oP '^#?FLAGS_\K[a-z0-9_]+(?==)' "$env" | sort)
unit_flags=$(grep -oP '^ExecStart=.*--tryfromenv=\K[a-z0-9_,]+' "$unit" | tr ',' '\n' | sort)
status=0
if [ "$flags" != "$env_flags" ]; then
  echo "deploy/sparkled.env and server/main.cc disagree on the flags:"
  diff <(echo "$flags") <(echo "$env_flags") || true
  status=1
fi
if [ "$flags" != "$unit_flags" ]; then
  echo "deploy/sparkled.service --tryfromenv and server/main.cc disagree on the flags:"
  diff <(echo "$flags") <(echo "$unit_flags") || true
  status=1
fi
# Every default written in the env file must parse: set them all, as systemd would.
if ! env $(grep -oP '^#?\KFLAGS_[a-z0-9_]+=\S*' "$env") \
    "$sparkled" --tryfromenv="$(echo "$flags" | paste -sd,)" --version >/dev/null; then
  echo "sparkled rejects the values of deploy/sparkled.env"
  status=1
fi
if [ $status -ne 0 ]; then
  echo "after changing flags in server/main.cc: deploy/update_flags.py BUILD/server/sparkled"
  exit $status
fi

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze not installed: unit not verified (flag lists checked)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/sparkled#$sparkled#" "$unit" > "$tmp/sparkled.service"
systemd-analyze verify "$tmp/sparkled.service"
# The unit with the security drop-in (deploy/sparkled-tls.conf): its flags exist, and verify
# accepts the combination (it reads drop-ins next to the unit it is given).
for f in $(grep -oP '^Environment=FLAGS_\K[a-z0-9_]+' "$src/deploy/sparkled-tls.conf"); do
  if ! grep -qx "$f" <<<"$flags"; then
    echo "deploy/sparkled-tls.conf sets FLAGS_$f, which is not a sparkled flag"
    exit 1
  fi
done
mkdir "$tmp/sparkled.service.d"
cp "$src/deploy/sparkled-tls.conf" "$tmp/sparkled.service.d/tls.conf"
systemd-analyze verify "$tmp/sparkled.service"
echo "deploy: flags consistent, unit verified (also with deploy/sparkled-tls.conf)"
