#!/usr/bin/env bash
# Dev tool only (never needed to build or test the crate). Every stub returns 100
# (cudaErrorNoDevice / CUDA_ERROR_NO_DEVICE), so torch sees no GPU.
# The PyPI torch wheel for Linux links against the NVIDIA CUDA libraries, which are separate
# multi-GB wheels. To use torch on the CPU only (to regenerate fixtures), this script builds
# empty stand-ins for those libraries that export the (unused) symbols torch's .so files ask for.
#   pip install --no-deps torch==2.15.0
#   bash tools/torch_cpu_stubs.sh /tmp/cudastub
#   LD_LIBRARY_PATH=/tmp/cudastub python tools/make_pth_fixtures.py
set -euo pipefail
OUT=${1:-/tmp/cudastub}
mkdir -p "$OUT"
L=$(python -c 'import importlib.util,os;print(os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin),"lib"))')
cd "$OUT"
nm -D --undefined-only "$L"/*.so 2>/dev/null | awk '{print $2}' | grep @ | sort -u > undef.txt
for f in "$L"/*.so; do readelf -V "$f" | awk '{for(i=1;i<=NF;i++){ if($i=="File:") file=$(i+1); if($i=="Name:" && file!="") print $(i+1), file}}'; done | sort -u > vermap.txt
nm -D --undefined-only "$L"/*.so 2>/dev/null | awk '{print $2}' | grep -v @ | grep -E "^(cu|nccl|nvshmem|nvtx|nvrtc|cuFile)" | sort -u > unversioned.txt
MISSING=$(for f in "$L"/*.so; do ldd "$f" | awk '/not found/{print $1}'; done | sort -u)
python3 - "$MISSING" <<'PY'
import collections, subprocess, sys
vm = collections.defaultdict(set)
for l in open('vermap.txt'):
    v, f = l.split(); vm[f].add(v)
syms = collections.defaultdict(set)
for l in open('undef.txt'):
    s, v = l.strip().split('@', 1); syms[v.lstrip('@')].add(s)
unv = [l.strip() for l in open('unversioned.txt') if l.strip()]
for so in sys.argv[1].split():
    vers = sorted(vm.get(so, ()))
    names = sorted({s for v in vers for s in syms[v]}) if vers else unv
    open(f'stub_{so}.c', 'w').write(''.join(f'int {s}(void){{return 100;}}\n' for s in names) or 'int __stub(void){return 100;}\n')
    cmd = ['gcc', '-shared', '-fPIC', '-o', so, f'stub_{so}.c', f'-Wl,-soname,{so}']
    if vers:
        open(f'ver_{so}.map', 'w').write(''.join(
            v + ' {\n global:\n' + ''.join(f'  {s};\n' for s in sorted(syms[v])) + '};\n' for v in vers))
        cmd.append(f'-Wl,--version-script=ver_{so}.map')
    subprocess.check_call(cmd)
    print('stub', so, len(names), 'symbols')
PY
