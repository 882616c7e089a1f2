#!/bin/sh
# Remove copilot-edge installed by systemd/install.sh.
#
#   systemd/uninstall.sh [--purge]
#
# Without --purge the data is kept: the state and buffered telemetry spool in
# /var/lib/copilot-edge (with DynamicUser=yes really /var/lib/private/copilot-edge), the logs in
# /var/log/copilot-edge, and /etc/copilot-edge (config and credentials), so a later install
# resumes where this one stopped. --purge removes them too.
# Honours DESTDIR, PREFIX and UNITDIR like install.sh.
set -eu

NAME=copilot-edge
CREDS="api-tokens llm-api-key mqtt-password pushgateway-password"

DESTDIR=${DESTDIR-}
PREFIX=${PREFIX:-/usr}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSCONFDIR=/etc

purge=0
for a in "$@"; do
    case $a in
        --purge) purge=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown argument: $a" >&2; exit 2 ;;
    esac
done

log() { echo "uninstall.sh: $*"; }

if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$NAME.service" 2>/dev/null || true
fi

rm -f "$DESTDIR$PREFIX/bin/$NAME" "$DESTDIR$UNITDIR/$NAME.service"
rm -rf "$DESTDIR$UNITDIR/$NAME.service.d" "$DESTDIR$PREFIX/share/doc/$NAME"
for c in $CREDS; do
    link=$DESTDIR$SYSCONFDIR/credstore/$NAME.$c
    # only our own symlinks; a regular file there belongs to the operator
    if [ -L "$link" ]; then rm -f "$link"; fi
done
log "binary and unit removed"

if [ "$purge" = 1 ]; then
    rm -rf "$DESTDIR/var/lib/${NAME:?}" "$DESTDIR/var/lib/private/${NAME:?}" \
           "$DESTDIR/var/log/${NAME:?}" "$DESTDIR/var/log/private/${NAME:?}" \
           "$DESTDIR${SYSCONFDIR:?}/${NAME:?}"
    log "purged state, spool, logs, config and credentials"
else
    log "kept /var/lib/$NAME (state and spool), /var/log/$NAME and $SYSCONFDIR/$NAME; use --purge to remove them"
fi

if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl reset-failed "$NAME.service" 2>/dev/null || true
fi
