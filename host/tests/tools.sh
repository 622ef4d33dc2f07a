#!/usr/bin/env bash
# Installs the external programs the integration tests talk to: Debian's
# nats-server (for the JetStream tests), chromium and chromium-driver (the
# console's browser tests drive a real Chromium over WebDriver), clang, lld,
# wasi-libc and the wasm32 compiler runtime (the C plugin recipe,
# plugins/build.sh c) and, from PyPI
# into .tools/venv, the real awscli and boto3 (for the EventBridge API tests).
# Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

if ! command -v nats-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "nats-server is missing; install it with: sudo apt-get install nats-server" >&2
        exit 1
    fi
    echo "== installing nats-server (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi

# The C plugin recipe's toolchain (plugins/build.sh c): Debian's clang with
# the WASI sysroot and the wasm32 compiler runtime.
if ! command -v clang >/dev/null 2>&1 || ! command -v wasm-ld >/dev/null 2>&1 ||
    [ ! -e /usr/lib/wasm32-wasi/libc.a ] || ! ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "the C toolchain is missing; install it with: sudo apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
        exit 1
    fi
    echo "== installing clang, lld, wasi-libc, libclang-rt-dev-wasm32 (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "chromium is missing; install it with: sudo apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    echo "== installing chromium and chromium-driver (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

venv="$root/.tools/venv"
if [ ! -x "$venv/bin/aws" ] || ! "$venv/bin/python" -c "import boto3" 2>/dev/null; then
    echo "== installing awscli and boto3 into .tools/venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "awscli==1.*" "boto3==1.*"
fi
