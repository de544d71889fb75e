#!/bin/sh
# imagegate postinst (deb: configure|abort-*; rpm %post: 1 install, 2 upgrade).
#
# Starts imagegate and never touches containerd: restarting the runtime is
# the operator's call, and containerd does not require imagegate until the
# operator opts in (README: "Install on a node").
set -e

# In a container or a chroot (CI, image builds) systemd is not PID 1:
# there is nothing to enable or start, and trying would fail the install.
if [ ! -d /run/systemd/system ]; then
	echo "imagegate: systemd is not running; not enabling or starting imagegate.service" >&2
	exit 0
fi

first_install=no
case "$1" in
configure) [ -z "$2" ] && first_install=yes ;;
1) first_install=yes ;;
abort-remove | abort-deconfigure | abort-upgrade) ;;
esac

systemctl daemon-reload || true
if [ "$first_install" = yes ]; then
	# enable links it into containerd.service.wants as well, so it comes
	# back after every containerd restart.
	systemctl enable imagegate.service || true
	systemctl start imagegate.service ||
		echo "imagegate: could not start imagegate.service; see: journalctl -u imagegate" >&2
else
	# An upgrade (or an aborted removal) keeps the operator's enable/disable
	# choice and runs the new binary if the service was running.
	systemctl try-restart imagegate.service || true
	case "$1" in abort-*)
		systemctl is-enabled --quiet imagegate.service && systemctl start imagegate.service || true ;;
	esac
fi
exit 0
