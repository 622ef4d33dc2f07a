#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (the
# guest toolchains through plugins/build.sh, nats-server, awscli and boto3),
# builds the plugins and test fixtures, then runs every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

"$root/plugins/build.sh"
"$root/host/tests/tools.sh"
export PATH="$root/.tools/venv/bin:$PATH"

cargo test --workspace "$@"
