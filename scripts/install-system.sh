#!/usr/bin/env bash
# Debian packages the corpus builder, the codec benchmark, the judges and the browser test need.
set -euo pipefail
PKGS=(flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng
      fluidsynth fluid-soundfont-gm timgm6mb-soundfont fortunes fortunes-zh wordnet-base sox libsndfile1
      chromium)  # the web page's browser test (tests/serve/test_webui.py drives it with Playwright)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
