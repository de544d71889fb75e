#!/bin/sh
# imagegate postrm (deb: remove|purge|upgrade|...; rpm %postun: 0 erase, 1 upgrade).
set -e

case "$1" in
purge | 0)
	# deb keeps state until purge; rpm has no purge, so erase is the end.
	rm -rf /var/lib/imagegate /run/imagegate
	;;
esac

case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
	;;
esac
exit 0
