package listeners

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TLSFiles names the PEM files a TLS listener serves and how it treats
// client certificates.
type TLSFiles struct {
	CertFile string // server certificate chain, leaf first
	KeyFile  string // its private key
	// ClientCAFile holds the CAs that sign client certificates; "" when
	// ClientAuth is tls.NoClientCert.
	ClientCAFile string
	// ClientAuth is tls.NoClientCert, tls.VerifyClientCertIfGiven or
	// tls.RequireAndVerifyClientCert.
	ClientAuth tls.ClientAuthType
}

// FileError is a TLS file that cannot be used; File says which one
// ("cert", "key" or "client-ca") so that a caller can name its flag.
type FileError struct {
	File string
	Path string
	Err  error
}

// Error names the file and the cause.
func (e *FileError) Error() string { return fmt.Sprintf("%s file %s: %v", e.File, e.Path, e.Err) }

// Unwrap returns the cause.
func (e *FileError) Unwrap() error { return e.Err }

// ErrKeyMismatch is the cause of a FileError for a key that is not the
// certificate's.
var ErrKeyMismatch = errors.New("private key does not match the certificate")

// Load reads and checks every file, and returns the server configuration
// they make: TLS 1.2 at least.
func (f TLSFiles) Load() (*tls.Config, error) {
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, &FileError{"cert", f.CertFile, err}
	}
	if err := checkPEM(certPEM, "CERTIFICATE"); err != nil {
		return nil, &FileError{"cert", f.CertFile, err}
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, &FileError{"key", f.KeyFile, err}
	}
	if err := checkPEM(keyPEM, "PRIVATE KEY"); err != nil {
		return nil, &FileError{"key", f.KeyFile, err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{"key", f.KeyFile, fmt.Errorf("%w %s: %w", ErrKeyMismatch, f.CertFile, err)}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   f.ClientAuth,
	}
	if f.ClientAuth != tls.NoClientCert {
		if f.ClientCAFile == "" {
			return nil, &FileError{"client-ca", "", errors.New("client certificates asked for but no CA file given")}
		}
		caPEM, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, &FileError{"client-ca", f.ClientCAFile, err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, &FileError{"client-ca", f.ClientCAFile, errors.New("no PEM CERTIFICATE block that parses")}
		}
		cfg.ClientCAs = pool
	}
	return cfg, nil
}

// checkPEM reports a file that holds no PEM block whose type ends in
// suffix, so that a key given for a certificate (or the reverse) is named
// as such rather than as a mismatch.
func checkPEM(data []byte, suffix string) error {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return fmt.Errorf("no PEM %s block", suffix)
		}
		if len(b.Type) >= len(suffix) && b.Type[len(b.Type)-len(suffix):] == suffix {
			return nil
		}
	}
}

// Certificates serves the configuration its files make, and re-reads them
// on Reload and, when polling, whenever one of them changes. A reload that
// fails keeps the configuration in force and logs why: connections are
// never dropped by a reload, and new handshakes use the newest good files.
type Certificates struct {
	files TLSFiles
	log   *slog.Logger
	cur   atomic.Pointer[tls.Config]

	mu   sync.Mutex // serialises reloads
	seen map[string]fileStamp

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewCertificates loads files, failing as TLSFiles.Load does. With poll > 0
// a goroutine checks the files' modification times and sizes every poll and
// reloads when one changed, until Close.
func NewCertificates(files TLSFiles, poll time.Duration, log *slog.Logger) (*Certificates, error) {
	cfg, err := files.Load()
	if err != nil {
		return nil, err
	}
	c := &Certificates{files: files, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	c.cur.Store(cfg)
	c.seen = c.stamps()
	if poll > 0 {
		go c.poll(poll)
	} else {
		close(c.done)
	}
	return c, nil
}

// ServerConfig is the configuration to hand crypto/tls: every handshake
// takes the files' newest good configuration.
func (c *Certificates) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.cur.Load(), nil
		},
	}
}

// Reload re-reads the files. On error the configuration in force stays and
// the error, naming the file, is logged and returned.
func (c *Certificates) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = c.stamps()
	cfg, err := c.files.Load()
	if err != nil {
		c.log.Error("TLS certificates not reloaded: keeping the previous ones", "err", err)
		return fmt.Errorf("reload TLS certificates: %w", err)
	}
	c.cur.Store(cfg)
	args := []any{"cert", c.files.CertFile}
	if leaf := cfg.Certificates[0].Leaf; leaf != nil {
		args = append(args, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
	}
	c.log.Info("TLS certificates reloaded", args...)
	return nil
}

// Close stops the polling.
func (c *Certificates) Close() {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

func (c *Certificates) poll(every time.Duration) {
	defer close(c.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		changed := !sameStamps(c.seen, c.stamps())
		c.mu.Unlock()
		if changed {
			_ = c.Reload() // logged there
		}
	}
}

// stamps records each file's modification time and size; a missing file
// has the zero stamp.
func (c *Certificates) stamps() map[string]fileStamp {
	m := make(map[string]fileStamp, 3)
	for _, p := range []string{c.files.CertFile, c.files.KeyFile, c.files.ClientCAFile} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			m[p] = fileStamp{st.ModTime(), st.Size()}
		} else {
			m[p] = fileStamp{}
		}
	}
	return m
}

func sameStamps(a, b map[string]fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !w.mod.Equal(v.mod) || w.size != v.size {
			return false
		}
	}
	return true
}
