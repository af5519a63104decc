#!/bin/sh
# Builds the Debian packages for this machine and puts them through what a box (and a
# precinct's desk) does with them. The box's:
# install (user, directories, unit), the packaged detector loading from its default paths,
# an upgrade over a provisioned box (configuration, outbox and device key kept), remove
# (configuration kept), purge (everything gone). It installs and removes the package on this
# machine, so run it on a machine for testing.
#
#   scripts/package-test.sh          the release package, as shipped
#   scripts/package-test.sh --dev    packaged from the tests' dev build (CI's stage 3: the
#                                    packaging is what is tested, and it saves a release build)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
arch=$(dpkg --print-architecture)
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
fail() { echo "package-test: $*" >&2; exit 1; }

"$here/scripts/deb.sh" "$arch" ${1:-}
deb=$(ls -t "$here"/target/debian/alertclip_*_"$arch".deb | head -n 1)
echo "package-test: $deb ($(du -h "$deb" | cut -f1))"
contents=$(dpkg-deb --contents "$deb")
for file in ./usr/bin/alertclip ./lib/systemd/system/alertclip.service \
    ./usr/lib/alertclip/libonnxruntime.so.1.31.1 ./usr/share/alertclip/models/yolox-nano.onnx \
    ./usr/share/doc/alertclip/alertclip.example.toml ./usr/share/doc/alertclip/install.md \
    ./usr/share/doc/alertclip/LICENSE-YOLOX; do
    echo "$contents" | grep -q " $file\$" || fail "$file is not in the package"
done

$sudo apt-get install -y -q "$deb"
getent passwd alertclip >/dev/null || fail "no alertclip user after install"
[ "$(stat -c '%U:%G %a' /etc/alertclip)" = "root:alertclip 750" ] || fail "/etc/alertclip: $(stat -c '%U:%G %a' /etc/alertclip)"
/usr/bin/alertclip --version
systemd-analyze verify /lib/systemd/system/alertclip.service

# The packaged runtime and model, from [detect]'s defaults.
dir=$(mktemp -d)
cat > "$dir/alertclip.toml" <<TOML
[site]
id = "package-test"
name = "Package test"
[storage]
dir = "$dir/clips"
[[camera]]
id = "none"
url = "rtsp://127.0.0.1:9/none"
[camera.detect]
TOML
/usr/bin/alertclip check --json --config "$dir/alertclip.toml" > "$dir/report.json" || true
python3 - "$dir/report.json" <<'PY' || fail "the packaged detector does not load"
import json, sys
report = json.load(open(sys.argv[1]))
detector = [f for f in report["findings"] if f["subject"] == "detector"][0]
print("package-test: detector:", detector["outcome"], detector["detail"])
sys.exit(0 if detector["outcome"] == "pass" else 1)
PY
rm -rf "$dir"

# An upgrade over a provisioned box keeps what provisioning and the service wrote.
echo "# provisioned" | $sudo tee /etc/alertclip/alertclip.toml >/dev/null
$sudo install -d -o alertclip -g alertclip /var/lib/alertclip/outbox /var/lib/alertclip/evidence
echo "waiting event" | $sudo tee /var/lib/alertclip/outbox/event >/dev/null
echo "device key" | $sudo tee /var/lib/alertclip/evidence/device.key >/dev/null
$sudo dpkg -i "$deb"
[ "$(cat /etc/alertclip/alertclip.toml)" = "# provisioned" ] || fail "upgrade changed the configuration"
[ -f /var/lib/alertclip/outbox/event ] || fail "upgrade lost the outbox"
[ -f /var/lib/alertclip/evidence/device.key ] || fail "upgrade lost the device key"
[ "$(stat -c '%U:%G %a' /etc/alertclip)" = "root:alertclip 750" ] || fail "upgrade changed /etc/alertclip"

$sudo apt-get remove -y -q alertclip
[ -f /etc/alertclip/alertclip.toml ] || fail "remove deleted the configuration"
[ -f /var/lib/alertclip/outbox/event ] || fail "remove deleted the outbox"
getent passwd alertclip >/dev/null || fail "remove deleted the user"
$sudo apt-get purge -y -q alertclip
[ ! -e /etc/alertclip ] || fail "purge left /etc/alertclip"
[ ! -e /var/lib/alertclip ] || fail "purge left /var/lib/alertclip"
! getent passwd alertclip >/dev/null || fail "purge left the alertclip user"
echo "package-test: install, upgrade, remove and purge behave"

# The desk's package: its user, directory and unit; init as the service user; an upgrade
# and a remove keep the database (it is evidence); purge deletes it.
"$here/scripts/deb.sh" desk ${1:-}
desk=$(ls -t "$here"/target/debian/alertclip-desk_*_"$arch".deb | head -n 1)
echo "package-test: $desk ($(du -h "$desk" | cut -f1))"
contents=$(dpkg-deb --contents "$desk")
for file in ./usr/bin/alertclip-desk ./lib/systemd/system/alertclip-desk.service \
    ./usr/share/doc/alertclip-desk/desk.md; do
    echo "$contents" | grep -q " $file\$" || fail "$file is not in the desk's package"
done
$sudo apt-get install -y -q "$desk"
getent passwd alertclip-desk >/dev/null || fail "no alertclip-desk user after install"
state=/var/lib/alertclip-desk
[ "$(stat -c '%U:%G %a' $state)" = "alertclip-desk:alertclip-desk 750" ] || fail "$state: $(stat -c '%U:%G %a' $state)"
systemd-analyze verify /lib/systemd/system/alertclip-desk.service
as_desk() { $sudo runuser -u alertclip-desk -- "$@"; }
as_desk /usr/bin/alertclip-desk init --dir $state --broker mqtt://127.0.0.1:1883 --host localhost >/dev/null
[ -f $state/desk.toml ] && [ -f $state/desk.sqlite ] || fail "init as the service user wrote no setup"
as_desk /usr/bin/alertclip-desk audit verify --config $state/desk.toml
$sudo dpkg -i "$desk"
[ -f $state/desk.sqlite ] || fail "upgrade lost the desk's database"
$sudo apt-get remove -y -q alertclip-desk
[ -f $state/desk.sqlite ] || fail "remove deleted the desk's database"
$sudo apt-get purge -y -q alertclip-desk
[ ! -e $state ] || fail "purge left $state"
! getent passwd alertclip-desk >/dev/null || fail "purge left the alertclip-desk user"
echo "package-test: the desk's package installs, upgrades, removes and purges as it should"
