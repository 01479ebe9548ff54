# Sourced by the build-*.sh scripts that build from a throwaway Go module: static binaries from
# the module cache as the go command finds it, with the machine's own Go.
export CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local

# throwaway_module NAME: cd into a new temporary module local/NAME, removed when the script exits.
throwaway_module() {
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init "local/$1" >/dev/null 2>&1
}
