#!/bin/sh
# Install (or upgrade) copilot-edge as a systemd service.
#
#   systemd/install.sh [BINARY]        BINARY defaults to ./copilot-edge
#
# Environment:
#   DESTDIR   staging root (default empty = this machine). With DESTDIR set nothing outside it
#             is touched and systemctl is not called, so it can build an image or be tested.
#   PREFIX    where the binary goes: $PREFIX/bin/copilot-edge (default /usr; the unit's
#             ExecStart= is rewritten when PREFIX is not /usr).
#   UNITDIR   where the unit goes (default /etc/systemd/system).
#
# Upgrade = run this again with the new binary: the binary and unit are replaced, the service is
# restarted, /etc/copilot-edge/copilot-edge.toml (if present) and the credentials are left alone,
# and the buffered spool under /var/lib/copilot-edge survives.
#
# Installed:
#   $PREFIX/bin/copilot-edge                         binary (0755)
#   $UNITDIR/copilot-edge.service                    unit (0644)
#   /etc/copilot-edge/copilot-edge.toml              example config, only if none exists (0644)
#   $PREFIX/share/doc/copilot-edge/copilot-edge.example.toml   current example, always refreshed
#   /etc/copilot-edge/credentials/                   secrets dir, root only (0700); put the files
#                                                    api-tokens, llm-api-key, mqtt-password,
#                                                    pushgateway-password here (0600), all optional
#   /etc/credstore/copilot-edge.<name>               symlinks to the files above: the unit loads
#                                                    credentials by name from the credstore, so a
#                                                    missing file is skipped instead of failing
#                                                    the start (systemd 252 has no optional
#                                                    LoadCredential= for absolute paths)
set -eu

NAME=copilot-edge
CREDS="api-tokens llm-api-key mqtt-password pushgateway-password"

here=$(cd "$(dirname "$0")" && pwd)
src_root=$(dirname "$here")

DESTDIR=${DESTDIR-}
PREFIX=${PREFIX:-/usr}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSCONFDIR=/etc

bin_src=${1:-./$NAME}
unit_src=$here/$NAME.service
config_src=${CONFIG_SRC:-$src_root/config/$NAME.example.toml}

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "install.sh: $*"; }

[ -f "$bin_src" ] || die "binary not found: $bin_src (pass its path as the first argument)"
[ -f "$unit_src" ] || die "unit not found: $unit_src"

bindir=$DESTDIR$PREFIX/bin
unitdir=$DESTDIR$UNITDIR
confdir=$DESTDIR$SYSCONFDIR/$NAME
credsdir=$confdir/credentials
credstore=$DESTDIR$SYSCONFDIR/credstore
docdir=$DESTDIR$PREFIX/share/doc/$NAME

umask 022
mkdir -p "$bindir" "$unitdir" "$confdir" "$docdir"

# Binary: copy next to the target, then rename, so a running service keeps its old inode and
# the replacement is atomic.
cp "$bin_src" "$bindir/.$NAME.new"
chmod 0755 "$bindir/.$NAME.new"
mv -f "$bindir/.$NAME.new" "$bindir/$NAME"
log "binary  -> $bindir/$NAME"

# Unit, with ExecStart= pointing at the installed binary.
sed "s#^ExecStart=/usr/bin/$NAME#ExecStart=$PREFIX/bin/$NAME#" "$unit_src" >"$unitdir/.$NAME.service.new"
chmod 0644 "$unitdir/.$NAME.service.new"
mv -f "$unitdir/.$NAME.service.new" "$unitdir/$NAME.service"
log "unit    -> $unitdir/$NAME.service"

# Config: never overwrite the operator's file.
if [ -f "$config_src" ]; then
    cp "$config_src" "$docdir/$NAME.example.toml"
    chmod 0644 "$docdir/$NAME.example.toml"
    if [ -e "$confdir/$NAME.toml" ]; then
        log "config  kept: $confdir/$NAME.toml (new example: $docdir/$NAME.example.toml)"
    else
        cp "$config_src" "$confdir/$NAME.toml"
        chmod 0644 "$confdir/$NAME.toml"
        log "config  -> $confdir/$NAME.toml"
    fi
else
    log "warning: no example config at $config_src; the service runs on embedded defaults"
fi

# Credentials directory (root only) and credstore links.
mkdir -p "$credsdir"
chmod 0700 "$credsdir"
if [ ! -d "$credstore" ]; then
    mkdir -p "$credstore"
    chmod 0700 "$credstore"
fi
for c in $CREDS; do
    link=$credstore/$NAME.$c
    if [ -L "$link" ] || [ ! -e "$link" ]; then
        ln -sfn "$SYSCONFDIR/$NAME/credentials/$c" "$link"
    else
        log "credstore: $link is a regular file, left as it is"
    fi
done
log "secrets -> $credsdir/<name> for <name> in: $CREDS (optional, 0600)"

# Activate, only on the real machine and only when systemd is running.
if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable "$NAME.service"
    # restart (not just start) so an upgrade picks up the new binary
    systemctl restart "$NAME.service"
    log "service enabled and (re)started: systemctl status $NAME"
elif [ -z "$DESTDIR" ]; then
    log "systemd is not running here: run 'systemctl daemon-reload && systemctl enable --now $NAME' on the target"
fi
