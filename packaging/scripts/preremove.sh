#!/bin/sh
# imagegate prerm (deb: remove|upgrade|deconfigure|failed-upgrade;
# rpm %preun: 0 erase, 1 upgrade).
set -e

removing=no
case "$1" in
remove | 0) removing=yes ;;
esac
[ "$removing" = yes ] || exit 0

# Removing imagegate while containerd requires it leaves a node that
# creates no container: refuse, and say how to undo the requirement first.
if [ -z "$IMAGEGATE_FORCE_REMOVE" ]; then
	for f in /etc/containerd/config.toml /etc/containerd/conf.d/*.toml; do
		[ -f "$f" ] || continue
		if grep -Eq '^[[:space:]]*required_plugins[[:space:]]*=.*"imagegate"' "$f"; then
			cat >&2 <<MSG
imagegate: containerd requires the imagegate NRI plugin ($f).
Removing imagegate now would stop every container create on this node.
First remove that requirement and restart containerd, e.g.:
    rm /etc/containerd/conf.d/imagegate.toml && systemctl restart containerd
then remove the package again. To remove it anyway, set IMAGEGATE_FORCE_REMOVE=1.
MSG
			exit 1
		fi
	done
fi

if [ ! -d /run/systemd/system ]; then
	echo "imagegate: systemd is not running; nothing to stop" >&2
	exit 0
fi
systemctl stop imagegate.service || true
systemctl disable imagegate.service || true
exit 0
