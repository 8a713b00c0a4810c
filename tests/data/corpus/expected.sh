#!/usr/bin/env bash
# The expected answer for one corpus library, obtained WITHOUT ipex-aot's scanner:
# binutils (readelf, ar), coreutils (od, dd, head), zstd. Prints one JSON object.
#
#   tests/data/corpus/expected.sh LIBRARY
#
# 1. readelf -SW: the bundle sections (__CLANG_OFFLOAD_BUNDLE__*) and .tgtimg, with
#    address, file offset and size.
# 2. od -tx8 over .tgtimg: its (u64 address, u64 size) pairs. Where the file holds zeros
#    (the dynamic linker fills them in), readelf -rW gives them: the R_X86_64_RELATIVE
#    relocation at each pair's address has the image address as its addend.
# 3. Each image is cut out with dd at (address - section address + section offset) and
#    identified by its own first bytes (od -tx1): SPIR-V magic 03022307; zstd magic
#    28b52ffd, then decompressed with `zstd -dc` and identified the same way; an ocloc fat
#    binary (!<arch>) is listed with `ar t`: 64.<generation> entries are native images
#    (each checked to be a zebin: ELF e_machine 205 at offset 18), generic_ir is SPIR-V.
set -euo pipefail
lib=$1
export LC_ALL=C
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name addr off size, one line per section (hex without 0x)
readelf -SW "$lib" | sed -n 's/^ *\[ *[0-9]*\] //p' | gawk '$1 !~ /^NULL$/ {print $1, $3, $4, $5}' > "$tmp/sections"
bundles=$(gawk '$1 ~ /^__CLANG_OFFLOAD_BUNDLE__/ {print $1}' "$tmp/sections")
read -r _ tg_addr tg_off tg_size < <(gawk '$1 == ".tgtimg"' "$tmp/sections") || { echo "no .tgtimg in $lib" >&2; exit 1; }

od -An -v -tx8 -j $((16#$tg_off)) -N $((16#$tg_size)) "$lib" | tr -s ' ' '\n' | sed '/^$/d' | paste - - > "$tmp/pairs"
entries=$(wc -l < "$tmp/pairs")
relocated=true
if ! gawk '$1 !~ /^0+$/ {found=1} END {exit !found}' "$tmp/pairs"; then
  relocated=false
  # offset info type addend: R_X86_64_RELATIVE relocations that write into .tgtimg's address slots
  readelf -rW "$lib" | gawk -v lo=$((16#$tg_addr)) -v n="$entries" '
    $3 == "R_X86_64_RELATIVE" { o = strtonum("0x" $1); if (o >= lo && o < lo + 16 * n && (o - lo) % 16 == 0) print (o - lo) / 16, $4 }' \
    | sort -n > "$tmp/relocs"
  [ "$(wc -l < "$tmp/relocs")" -eq "$entries" ] || { echo "relocations do not fill every .tgtimg entry" >&2; exit 1; }
  paste <(gawk '{print $2}' "$tmp/relocs") <(gawk '{print $2}' "$tmp/pairs") > "$tmp/pairs2" && mv "$tmp/pairs2" "$tmp/pairs"
fi

# Section ranges as decimal numbers for the lookup in the loop below (bash arithmetic, no process per image).
sec_addr=(); sec_off=(); sec_size=()
while read -r _ a o z; do
  [ -n "$z" ] || continue
  sec_addr+=($((16#$a))); sec_off+=($((16#$o))); sec_size+=($((16#$z)))
done < "$tmp/sections"

images=0 compressed=0 spirv=0 members=0
: > "$tmp/gens"
while read -r addr size; do
  a=$((16#$addr)); n=$((16#$size)); off=
  for k in "${!sec_addr[@]}"; do
    if (( a >= sec_addr[k] && a < sec_addr[k] + sec_size[k] )); then off=$((a - sec_addr[k] + sec_off[k])); break; fi
  done
  [ -n "$off" ] || { echo "entry at 0x$addr is in no section" >&2; exit 1; }
  images=$((images + 1))
  cut() { dd if="$lib" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$1" status=none; }
  h=$(od -An -tx1 -N8 -j "$off" "$lib"); h=${h//[$' \n']/}
  inner=cut
  if [ "${h:0:8}" = 28b52ffd ]; then
    compressed=$((compressed + 1))
    # The stored frame is shorter than the uncompressed size the table gives; zstd stops at its end.
    inner=unzstd
    unzstd() { cut "$n" | zstd -dcq 2>/dev/null | head -c "$1" || true; }
    h=$(cut "$n" | zstd -dcq 2>/dev/null | od -An -tx1 -N8 || true); h=${h//[$' \n']/}
  fi
  case "$h" in
    03022307*) spirv=$((spirv + 1)) ;;
    213c617263683e0a)
      $inner "$n" > "$tmp/fat"
      for m in $(ar t "$tmp/fat"); do
        case "$m" in
          generic_ir) spirv=$((spirv + 1)) ;;
          64.*|32.*)
            members=$((members + 1))
            em=$(ar p "$tmp/fat" "$m" | head -c 20 | od -An -tu2 -j18 -N2 | tr -d ' ' || true)  # ar: SIGPIPE
            [ "$em" = 205 ] || { echo "fat-binary entry $m is not a zebin (e_machine $em)" >&2; exit 1; }
            echo "${m#*.}" >> "$tmp/gens" ;;
        esac
      done ;;
    *) echo "entry at 0x$addr: unknown image starting $h" >&2; exit 1 ;;
  esac
done < "$tmp/pairs"

gens=$(sort -u -t. -k1,1n -k2,2n -k3,3n "$tmp/gens" | gawk '{printf "%s\"%s\"", (NR > 1 ? ", " : ""), $1}')
secs=$(for s in $bundles .tgtimg; do printf '"%s"\n' "$s"; done | paste -sd, | sed 's/,/, /g')
jit=false; [ "$spirv" -gt 0 ] && jit=true
printf '{"sections": [%s], "tgtimg_entries": %d, "tgtimg_relocated_in_file": %s, "images": %d, "compressed_images": %d, "spirv_images": %d, "native_images": %d, "native": [%s], "jit": %s}\n' \
  "$secs" "$entries" "$relocated" "$images" "$compressed" "$spirv" "$members" "$gens" "$jit"
