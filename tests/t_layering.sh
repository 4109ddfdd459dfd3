#!/bin/sh
# t_layering.sh: the layers keep to their headers (DESIGN.md, "Layers of the house"). A file
# under kernels/ includes, of the engine, only the kernel boundary (core/kernel.h and the op
# table core/ops.def) and headers of its own backend directory; core/ includes no Lua or CUDA
# header and no kernels/ header; lua/ includes no kernels/ header and none of the core's
# internal ones (it calls core through gm.h). An include written with a path ("../core/x.h") is
# judged by the file it names. Usage: t_layering.sh [ROOT] (default: .); TAP.
root=${1:-.}
cd "$root" || { echo "1..0 # SKIP no tree at $root"; exit 0; }

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; }

# "file:line:name" for each #include of the given files (quoted and <> alike).
includes() {
    [ $# -gt 0 ] || return 0
    awk '/^[ \t]*#[ \t]*include[ \t]*[<"]/ {
        h = $0; sub(/^[^<"]*[<"]/, "", h); sub(/[>"].*$/, "", h); print FILENAME ":" FNR ":" h }' "$@"
}

# An include written with a path ("../../core/internal.h"), as a path from the root, else "".
resolved() {
    case "$2" in */*) [ -f "$(dirname "$1")/$2" ] && realpath -m --relative-to=. "$(dirname "$1")/$2" ;; esac
}

# Is a header of this name in a kernels/ backend directory?
kernel_header() { for d in kernels/*/; do [ -f "$d$1" ] && return 0; done; return 1; }

kfiles=$(find kernels -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | sort)
cfiles=$(find core -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)
lfiles=$(find lua -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)
echo "1..4"

if [ -n "$kfiles" ] && [ -n "$cfiles" ] && [ -n "$lfiles" ]; then
    ok "read $(echo "$kfiles" | wc -l) kernels/, $(echo "$cfiles" | wc -l) core/ and $(echo "$lfiles" | wc -l) lua/ files"
else
    not_ok "kernels/, core/ and lua/ all hold C files"
fi

bad=$(includes $kfiles | while IFS=: read -r f line h; do
    r=$(resolved "$f" "$h")
    if [ -n "$r" ]; then # by path: core's boundary headers, or its own backend's
        case "$r" in core/kernel.h | core/kargs.h | core/ops.def | "$(dirname "$f")"/*) ;; *) echo "$f:$line includes $h" ;; esac
        continue
    fi
    case "$h" in kernel.h | kargs.h | ops.def) continue ;; esac
    [ -f "$(dirname "$f")/$h" ] && continue        # its own backend's headers
    [ -f "core/$h" ] || kernel_header "$h" || case "$h" in lua*.h | lauxlib.h) ;; *) continue ;; esac
    echo "$f:$line includes $h"
done)
if [ -z "$bad" ]; then ok "kernels/ reach the engine only through kernel.h and ops.def"; else
    not_ok "kernels/ reach the engine only through kernel.h and ops.def"
    echo "$bad" | sed 's/^/# /'
fi

bad=$(includes $cfiles | while IFS=: read -r f line h; do
    r=$(resolved "$f" "$h")
    if [ -n "$r" ]; then
        case "$r" in core/*) ;; *) echo "$f:$line includes $h" ;; esac
        continue
    fi
    case "$h" in
    lua.h | lauxlib.h | lualib.h | luaconf.h | lua5*/* | cuda*.h | cublas*.h) echo "$f:$line includes $h" ;;
    *) [ -f "core/$h" ] || [ -f "$(dirname "$f")/$h" ] || ! kernel_header "$h" || echo "$f:$line includes $h" ;;
    esac
done)
if [ -z "$bad" ]; then ok "core/ includes no Lua, CUDA or kernels/ header"; else
    not_ok "core/ includes no Lua, CUDA or kernels/ header"
    echo "$bad" | sed 's/^/# /'
fi

bad=$(includes $lfiles | while IFS=: read -r f line h; do
    r=$(resolved "$f" "$h")
    if [ -n "$r" ]; then
        case "$r" in
        lua/*) ;;
        core/kernel.h | core/backend.h | core/internal.h | core/sample.h | core/*/* | kernels/*) echo "$f:$line includes $h" ;;
        esac
        continue
    fi
    case "$h" in kernel.h | backend.h | internal.h | sample.h) echo "$f:$line includes $h"; continue ;; esac
    [ -f "lua/$h" ] && continue
    ! kernel_header "$h" || echo "$f:$line includes $h"
done)
if [ -z "$bad" ]; then ok "lua/ calls the engine through core's public headers only"; else
    not_ok "lua/ calls the engine through core's public headers only"
    echo "$bad" | sed 's/^/# /'
fi
[ "$fails" -eq 0 ]
