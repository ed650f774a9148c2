package mqtttest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binaries holds the binaries built in this test process, by package
// directory.
var binaries struct {
	mu    sync.Mutex
	built map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds the command in directory pkgDir (relative to the test's
// working directory: "." for the server at the repository root,
// "./examples/bench" for an example program) once per test process and
// returns the binary's path. It lives in a directory under
// os.TempDir() named after pkgDir's absolute path, so repeated runs reuse
// one place instead of leaving a binary behind each time; the build goes to
// a fresh file renamed into place, so two test runs at once never execute a
// half-written binary.
func Binary(t testing.TB, pkgDir string) string {
	t.Helper()
	abs, err := filepath.Abs(pkgDir)
	if err != nil {
		t.Fatalf("build %s: %v", pkgDir, err)
	}
	binaries.mu.Lock()
	if binaries.built == nil {
		binaries.built = make(map[string]*builtBinary)
	}
	b := binaries.built[abs]
	if b == nil {
		b = &builtBinary{}
		binaries.built[abs] = b
	}
	binaries.mu.Unlock()
	b.once.Do(func() { b.path, b.err = build(abs) })
	if b.err != nil {
		t.Fatalf("build %s: %v", pkgDir, b.err)
	}
	return b.path
}

func build(pkgDir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, statErr := os.Stat(goBin); statErr != nil {
			return "", fmt.Errorf("no go command in PATH (%v) nor in $GOROOT/bin: %w", err, statErr)
		}
	}
	sum := sha256.Sum256([]byte(pkgDir))
	dir := filepath.Join(os.TempDir(), "bridgemq-e2e-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("binary directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(pkgDir)+"-*.tmp")
	if err != nil {
		return "", fmt.Errorf("binary file: %w", err)
	}
	_ = tmp.Close()
	cmd := exec.Command(goBin, "build", "-o", tmp.Name(), ".")
	cmd.Dir = pkgDir
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	path := filepath.Join(dir, filepath.Base(pkgDir))
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("install binary: %w", err)
	}
	return path, nil
}
