# Sourced by scripts/test.sh: installs what the tests drive for real
# (nginx, strace, node + npm, pnpm, BuildGrid) and exports the variables
# that make those tests fail instead of skipping when something is missing.
export DEBIAN_FRONTEND=noninteractive
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v strace >/dev/null || need_apt+=(strace)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
# The remote cache tests run nginx's WebDAV module as a Bazel HTTP cache.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "--- apt: ${need_apt[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${need_apt[@]}"
fi

echo "--- npm fixtures (the real @voidzero-dev/vite-task-client for the IPC tests)"
(cd ipc/tests/node-fixture && npm ci --no-audit --no-fund --loglevel=error)
echo "--- pnpm + examples/vite-monorepo (the Vite end-to-end test)"
command -v pnpm >/dev/null || as_root npm i -g pnpm --no-audit --no-fund --loglevel=error
(cd examples/vite-monorepo && pnpm install --frozen-lockfile --reporter=silent)

echo "--- BuildGrid (REAPI server for the gRPC remote cache tests)"
# A fresh venv each run, outside the checkout, removed when the tests end.
bgd_tmp="$(mktemp -d)"
trap 'rm -rf "$bgd_tmp"' EXIT
python3 -m venv "$bgd_tmp/venv"
"$bgd_tmp/venv/bin/pip" install -q --disable-pip-version-check buildgrid==0.4.4
export VBUILD_BGD="$bgd_tmp/venv/bin/bgd"

export VBUILD_REQUIRE_NODE=1 VBUILD_REQUIRE_NGINX=1 VBUILD_REQUIRE_BUILDGRID=1
