#!/usr/bin/env bash
# Builds busbar's example plugins into plugins/NAME.wasm (beside each NAME.toml
# manifest) and the test fixtures into plugins/fixtures/NAME.wasm.
#
# Usage: plugins/build.sh [rust] [js] [python] [c]    (no argument: rust js python)
#
# `c` builds the C fixture (the recipe plugins/README.md documents) and needs
# Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32 (host/tests/tools.sh
# installs them); the rest needs only rustup/cargo, python3 (3.11+) with
# venv/pip, and node 20+ with npm:
# every guest toolchain is installed from its registry on first use, pinned here
# or in a committed lock file. Later runs skip installs that are done and outputs
# that are up to date, so an unchanged tree rebuilds in a few seconds.
set -euo pipefail

readonly COMPONENTIZE_PY_VERSION=0.25.1
readonly RUST_TARGET=wasm32-wasip2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$(cd "$here/../wit" && pwd)"
cd "$here"

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
	printf 'build.sh: error: %s\n' "$*" >&2
	exit 1
}
need() {
	command -v "$1" >/dev/null 2>&1 || die "$1 is not on PATH; $2"
}

# True when $1 is missing or any file under the other arguments is newer.
stale() {
	local out="$1"
	shift
	[[ -e "$out" ]] || return 0
	[[ -n "$(find "$@" \( -name node_modules -o -name __pycache__ -o -name target \) -prune \
		-o -type f -newer "$out" -print -quit)" ]]
}

# Work files go here, outside the watched directory, on the same file system so
# that the final `mv` is an atomic rename: busbar never sees a half-written plugin.
stage="$here/target/stage"
mkdir -p "$stage"

# Moves a build product into place only when its bytes changed, so busbar's hot
# reload does not see a rewrite of an identical plugin.
publish() {
	local from="$1" to="$2"
	if [[ -e "$to" ]] && cmp -s "$from" "$to"; then
		note "${to#"$here"/} unchanged ($(size "$to"))"
	else
		cp "$from" "$stage/publish.wasm"
		mv -f "$stage/publish.wasm" "$to"
		note "wrote ${to#"$here"/} ($(size "$to"))"
	fi
}

size() { du -h "$1" | cut -f1; }

build_rust() {
	step "Rust guests (cargo, $RUST_TARGET)"
	need cargo "install Rust with rustup"
	need rustup "install Rust with rustup"
	if ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
		note "adding the $RUST_TARGET target"
		rustup target add "$RUST_TARGET"
	fi
	# cargo decides freshness itself and finishes in well under a second when
	# nothing changed, so it always runs; --locked keeps CI on the committed lock.
	CARGO_TARGET_DIR="$here/target" cargo build --release --locked \
		--target "$RUST_TARGET" --manifest-path "$here/Cargo.toml"
	local out="$here/target/$RUST_TARGET/release"
	publish "$out/payment_check.wasm" "$here/payment-check.wasm"
	publish "$out/autoscaler.wasm" "$here/autoscaler.wasm"
	mkdir -p "$here/fixtures"
	publish "$out/testkit.wasm" "$here/fixtures/testkit.wasm"
	publish "$out/echo_v1.wasm" "$here/fixtures/echo-v1.wasm"
	publish "$out/echo_v2.wasm" "$here/fixtures/echo-v2.wasm"
}

build_js() {
	step "JavaScript guest: rewards (componentize-js)"
	need node "install Node.js 20 or newer"
	need npm "install npm (it ships with Node.js)"
	local dir="$here/rewards"
	# npm writes node_modules/.package-lock.json on every install; when it is
	# older than the committed lock, the lock changed and the install is redone.
	if stale "$dir/node_modules/.package-lock.json" "$dir/package-lock.json" "$dir/package.json"; then
		note "installing pinned npm packages (npm ci)"
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	fi
	# The staged copy is the freshness stamp: publish() leaves plugins/rewards.wasm
	# untouched when a rebuild yields the same bytes.
	local built="$stage/rewards.wasm"
	if stale "$built" "$dir/src" "$dir/package-lock.json" "$wit" "$here/build.sh"; then
		# fetch() is left out: outbound HTTP goes through busbar's http import.
		(cd "$dir" && npx --no-install componentize-js src/rewards.js \
			--wit "$wit" --world-name handler --disable http fetch-event \
			--out "$stage/rewards.partial.wasm" >/dev/null)
		mv -f "$stage/rewards.partial.wasm" "$built"
	else
		note "rewards sources unchanged since the last build"
	fi
	publish "$built" "$here/rewards.wasm"
}

build_python() {
	step "Python guest: notification (componentize-py $COMPONENTIZE_PY_VERSION)"
	need python3 "install Python 3.11 or newer"
	local venv="$here/.venv"
	local tool="$venv/bin/componentize-py"
	if [[ ! -x "$tool" ]] || [[ "$("$tool" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
		note "installing componentize-py $COMPONENTIZE_PY_VERSION into plugins/.venv"
		[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" ||
			die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
		"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
			--no-input "componentize-py==$COMPONENTIZE_PY_VERSION"
	fi
	local dir="$here/notification"
	local built="$stage/notification.wasm"
	if stale "$built" "$dir" "$wit" "$here/build.sh" || [[ "$tool" -nt "$built" ]]; then
		# Only the app's own directory goes in, not the venv's site-packages
		# (componentize-py would bundle those if VIRTUAL_ENV were set).
		(cd "$dir" && env -u VIRTUAL_ENV "$tool" --wit-path "$wit" --world handler \
			componentize --python-path . notification -o "$stage/notification.partial.wasm" >/dev/null)
		mv -f "$stage/notification.partial.wasm" "$built"
	else
		note "notification sources unchanged since the last build"
	fi
	publish "$built" "$here/notification.wasm"
}

build_c() {
	step "C guest: c-counter (clang, wit-bindgen's C generator, the preview 1 adapter)"
	need clang "install Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32 (host/tests/tools.sh does)"
	need wasm-ld "install Debian's lld"
	# The bindings generator and the component wrapper, built once natively.
	CARGO_TARGET_DIR="$here/target" cargo build --locked --quiet \
		--manifest-path "$here/c-toolkit/Cargo.toml"
	local tool="$here/target/debug/c-toolkit"
	local src="$here/fixtures/c-counter"
	local built="$stage/c-counter.wasm"
	if stale "$built" "$src" "$wit" "$here/build.sh" || [[ "$tool" -nt "$built" ]]; then
		local gen="$stage/c-counter-bindings"
		"$tool" bindings "$wit" "$gen"
		# A reactor: no main, the host calls the exports.
		clang --target=wasm32-wasi -mexec-model=reactor -O2 -I"$gen" \
			-o "$stage/c-counter.core.wasm" "$src/counter.c" "$gen/handler.c" \
			"$gen/handler_component_type.o"
		"$tool" component "$stage/c-counter.core.wasm" "$stage/c-counter.partial.wasm"
		mv -f "$stage/c-counter.partial.wasm" "$built"
	else
		note "c-counter sources unchanged since the last build"
	fi
	mkdir -p "$here/fixtures"
	publish "$built" "$here/fixtures/c-counter.wasm"

	# A component of another world, for the tests of the errors authors meet.
	local wrong="$here/fixtures/wrong-world"
	built="$stage/wrong-world.wasm"
	if stale "$built" "$wrong" "$here/build.sh" || [[ "$tool" -nt "$built" ]]; then
		"$tool" bindings "$wrong/wit" "$stage/wrong-world-bindings"
		clang --target=wasm32-wasi -mexec-model=reactor -O2 -I"$stage/wrong-world-bindings" \
			-o "$stage/wrong-world.core.wasm" "$wrong/wrong.c" \
			"$stage/wrong-world-bindings/handler.c" "$stage/wrong-world-bindings/handler_component_type.o"
		"$tool" component "$stage/wrong-world.core.wasm" "$stage/wrong-world.partial.wasm"
		mv -f "$stage/wrong-world.partial.wasm" "$built"
	fi
	publish "$built" "$here/fixtures/wrong-world.wasm"
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(rust js python)
for part in "${parts[@]}"; do
	case "$part" in
	rust) build_rust ;;
	js) build_js ;;
	python) build_python ;;
	c) build_c ;;
	*) die "unknown part '$part' (expected rust, js, python or c)" ;;
	esac
done
step "done"
