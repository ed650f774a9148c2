package auth

import (
	"errors"
	"fmt"
)

// Sentinel errors wrapped by LineError, for callers that test with errors.Is.
var (
	// ErrSyntax reports a line that is not in the file's format.
	ErrSyntax = errors.New("syntax error")
	// ErrUnsupportedHash reports a password hash that is neither "$6$" nor "$7$".
	ErrUnsupportedHash = errors.New("unsupported password hash")
	// ErrInvalidHash reports a "$6$"/"$7$" hash whose fields do not decode.
	ErrInvalidHash = errors.New("invalid password hash")
	// ErrDuplicateUser reports a user name defined twice in a password file.
	ErrDuplicateUser = errors.New("duplicate user")
	// ErrInvalidFilter reports an ACL topic that is not a valid topic filter.
	ErrInvalidFilter = errors.New("invalid topic filter")
)

// LineError locates a problem in a password or ACL file. Path is empty when the
// input did not come from a named file.
type LineError struct {
	Path string
	Line int
	Err  error
}

// Error formats the error as "path:line: reason", the form editors jump to.
func (e *LineError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.Path, e.Line, e.Err)
}

// Unwrap returns the underlying reason, so errors.Is sees the sentinels above.
func (e *LineError) Unwrap() error { return e.Err }

// withPath stamps the file name on a LineError produced by a Parse function.
func withPath(err error, path string) error {
	var le *LineError
	if errors.As(err, &le) {
		le.Path = path
		return le
	}
	return fmt.Errorf("%s: %w", path, err)
}
