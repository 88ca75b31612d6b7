package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"debug/elf"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// images are the images build.sh makes, each named after its binary.
var images = []string{"sluice-ingest", "sluice-sender", "sluice-logwriter", "sluice-topics"}

const (
	source = "https://github.com/sluicehq/sluice"
	caPath = "etc/ssl/certs/ca-certificates.crt"
	// The largest archive a test run unpacks: the images are about 31–36 MiB
	// uncompressed (README, "Container images"), so 200 MiB means something
	// else was built.
	maxUnpacked = 200 << 20
)

// TestImages builds the images as make images does (reusing what is up to
// date) and checks each one: its config, its files, and that its
// entrypoint starts from the unpacked root filesystem. podman run does not
// work on these machines (no cgroups), so running the binary directly is
// the nearest to running the image.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the images with buildah; skipped by -short, like the tests that need the real Kafka and ClickHouse")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Fatalf("buildah is needed to build the images and is not installed (%v); make deps installs it (Debian package buildah)", err)
	}
	version := git(t, root, "describe", "--tags", "--always", "--dirty")
	revision := git(t, root, "rev-parse", "HEAD")
	created, err := time.Parse(time.RFC3339, git(t, root, "log", "-1", "--format=%cI", "HEAD"))
	if err != nil {
		t.Fatalf("reading the commit time: %v", err)
	}

	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(root, "dev/images/build.sh"))
	cmd.Dir = root
	// The version is fixed here so the tree cannot change between build.sh's
	// git describe and ours; SOURCE_DATE_EPOCH is dropped so the created
	// label is the commit time. Only this machine's architecture can run,
	// so it is the one built, unless SLUICE_IMAGE_ARCHS asks for it among
	// others (then the test reads it from the multi-platform index).
	archs := os.Getenv("SLUICE_IMAGE_ARCHS")
	if !slices.Contains(strings.Fields(archs), runtime.GOARCH) {
		archs = runtime.GOARCH
	}
	cmd.Env = append(withoutEnv("SOURCE_DATE_EPOCH", "SLUICE_IMAGE_VERSION", "SLUICE_IMAGE_ARCHS"),
		"SLUICE_IMAGE_VERSION="+version, "SLUICE_IMAGE_ARCHS="+archs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	table, err := cmd.Output()
	if err != nil {
		t.Fatalf("dev/images/build.sh could not build the images: %v\n%s", err, stderr.String())
	}
	t.Logf("build.sh took %v:\n%s%s", time.Since(start).Round(time.Millisecond), stderr.String(), table)
	archives := archivePaths(t, string(table), version)

	mozilla := mozillaCerts(t)
	for _, name := range images {
		t.Run(name, func(t *testing.T) {
			img := loadImage(t, archives[name], version)
			checkConfig(t, img, name, map[string]string{
				"org.opencontainers.image.title":    name,
				"org.opencontainers.image.version":  version,
				"org.opencontainers.image.revision": revision,
				"org.opencontainers.image.source":   source,
				"org.opencontainers.image.url":      source,
				"org.opencontainers.image.licenses": "Apache-2.0",
				"org.opencontainers.image.vendor":   "The Sluice Authors",
			}, created)
			rootfs := unpackRootFS(t, img, name)
			checkStatic(t, filepath.Join(rootfs, name))
			checkCABundle(t, filepath.Join(rootfs, caPath), mozilla)
			checkRuns(t, filepath.Join(rootfs, name), name, version, revision)
		})
	}
}

// checkConfig checks the image's platform, user, entrypoint and labels.
func checkConfig(t *testing.T, img v1.Image, name string, want map[string]string, created time.Time) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("reading the image config: %v", err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User = %q, want 65532:65532 (non-root, Kubernetes runAsNonRoot can verify a numeric user)", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/" + name}) {
		t.Errorf("Entrypoint = %q, want [/%s]", c.Entrypoint, name)
	}
	if len(c.Cmd) > 0 {
		t.Errorf("Cmd = %q, want none (there is no shell to run it)", c.Cmd)
	}
	for k, v := range want {
		if got := c.Labels[k]; got != v {
			t.Errorf("label %s = %q, want %q", k, got, v)
		}
	}
	if c.Labels["org.opencontainers.image.description"] == "" {
		t.Error("label org.opencontainers.image.description is missing")
	}
	got, err := time.Parse(time.RFC3339, c.Labels["org.opencontainers.image.created"])
	if err != nil || !got.Equal(created) {
		t.Errorf("label org.opencontainers.image.created = %q, want the commit time %s (%v)",
			c.Labels["org.opencontainers.image.created"], created.UTC().Format(time.RFC3339), err)
	}
}

// unpackRootFS writes the image's flattened filesystem under a temporary
// directory, failing on anything but the binary, the CA bundle and their
// directories.
func unpackRootFS(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	rootfs := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	wantDirs := map[string]bool{"etc": true, "etc/ssl": true, "etc/ssl/certs": true}
	wantFiles := map[string]os.FileMode{name: 0o755, caPath: 0o644}
	var files []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the image's filesystem: %v", err)
		}
		p := strings.Trim(path.Clean("/"+hdr.Name), "/")
		switch {
		case hdr.Typeflag == tar.TypeDir && wantDirs[p]:
		case hdr.Typeflag == tar.TypeReg && wantFiles[p] != 0:
			// Owned by root, readable (and the binary executable) by
			// anyone: user 65532 cannot change them, only use them.
			if mode := os.FileMode(hdr.Mode).Perm(); mode != wantFiles[p] || hdr.Uid != 0 {
				t.Errorf("/%s has mode %v owner %d, want %v owned by root", p, mode, hdr.Uid, wantFiles[p])
			}
			files = append(files, p)
			if err := os.MkdirAll(filepath.Join(rootfs, filepath.Dir(p)), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(rootfs, p), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(f, io.LimitReader(tr, maxUnpacked))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatalf("unpacking /%s: %v", p, err)
			}
		default:
			t.Errorf("unexpected /%s (type %q) in the image: it holds the binary and the CA bundle only (no shell)", p, hdr.Typeflag)
		}
	}
	slices.Sort(files)
	if want := []string{caPath, name}; !slices.Equal(files, want) {
		t.Fatalf("image files %q, want %q", files, want)
	}
	return rootfs
}

// checkStatic fails unless the binary is a static ELF executable for this
// machine: no interpreter (ld.so) and no dynamic section, so an image with
// no libc can run it.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("reading the binary: %v", err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]
	if f.Machine != want {
		t.Errorf("binary is for %v, want %v", f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked (build with CGO_ENABLED=0)", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("binary has a .dynamic section: it is dynamically linked")
	}
}

// mozillaCerts reads the certificates of Debian's ca-certificates package,
// which build.sh bundles, and the ones this machine added locally, which it
// must leave out.
func mozillaCerts(t *testing.T) (certs struct{ mozilla, local map[string]bool }) {
	t.Helper()
	read := func(glob string) map[string]bool {
		set := map[string]bool{}
		paths, _ := filepath.Glob(glob)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, der := range pemCerts(t, p, b) {
				set[string(der)] = true
			}
		}
		return set
	}
	certs.mozilla = read("/usr/share/ca-certificates/mozilla/*.crt")
	certs.local = read("/usr/local/share/ca-certificates/*.crt")
	if len(certs.mozilla) < 100 {
		t.Fatalf("found %d certificates in /usr/share/ca-certificates/mozilla; is the Debian package ca-certificates installed?", len(certs.mozilla))
	}
	return certs
}

// checkCABundle checks the bundle is exactly Debian's Mozilla set, without a
// CA this machine added (which would then be trusted by every user).
func checkCABundle(t *testing.T, bundle string, certs struct{ mozilla, local map[string]bool }) {
	t.Helper()
	b, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	got := pemCerts(t, bundle, b)
	if len(got) != len(certs.mozilla) {
		t.Errorf("CA bundle holds %d certificates, want the %d of Debian's ca-certificates", len(got), len(certs.mozilla))
	}
	for _, der := range got {
		c, _ := x509.ParseCertificate(der)
		switch {
		case certs.local[string(der)]:
			t.Errorf("CA bundle holds %q, which this machine added locally", c.Subject)
		case !certs.mozilla[string(der)]:
			t.Errorf("CA bundle holds %q, which is not in Debian's ca-certificates", c.Subject)
		}
	}
}

// pemCerts returns the DER of every certificate in a PEM file.
func pemCerts(t *testing.T, name string, b []byte) [][]byte {
	t.Helper()
	var ders [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if _, err := x509.ParseCertificate(blk.Bytes); blk.Type != "CERTIFICATE" || err != nil {
			t.Fatalf("%s: block %d is not a valid certificate (%s, %v)", name, len(ders)+1, blk.Type, err)
		}
		ders = append(ders, blk.Bytes)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		t.Fatalf("%s: %d bytes after the last certificate are not PEM", name, len(b))
	}
	return ders
}

// checkRuns starts the entrypoint with -version and -help, as a container
// would with those arguments.
func checkRuns(t *testing.T, bin, name, version, revision string) {
	t.Helper()
	run := func(env []string, args ...string) string {
		// A bound for a hung binary only: each run takes milliseconds.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = filepath.Dir(bin)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("/%s %s: %v (want exit 0)\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	if got, want := run(nil, "-version"), fmt.Sprintf("%s %s (%s)\n", name, version, revision); got != want {
		t.Errorf("/%s -version printed %q, want %q", name, got, want)
	}
	// SLUICE_VERSION in the environment (as a chart might set it) must not
	// turn -help, or a plain start, into printing the version.
	help := run([]string{"SLUICE_VERSION=true"}, "-help")
	if !strings.HasPrefix(help, "Usage of "+name+" ") || !strings.Contains(help, "-kafka-brokers") || !strings.Contains(help, "  -version\n") {
		t.Errorf("/%s -help printed no usage listing the settings and -version:\n%s", name, help)
	}
	if strings.Contains(help, revision) {
		t.Errorf("/%s -help with SLUICE_VERSION set printed the version:\n%s", name, help)
	}
}

// loadImage unpacks an OCI archive (a tar of an OCI image layout) and
// returns its image tagged version, for this machine's architecture when
// the tag is a multi-platform index.
func loadImage(t *testing.T, archive, version string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	if err := untar(archive, dir); err != nil {
		t.Fatalf("unpacking %s: %v", archive, err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading the OCI layout of %s: %v", archive, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("reading the index of %s: %v", archive, err)
	}
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != version {
			continue
		}
		if !d.MediaType.IsIndex() {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatalf("reading the image of %s: %v", archive, err)
			}
			return img
		}
		sub, err := idx.ImageIndex(d.Digest)
		if err != nil {
			t.Fatalf("reading the platform index of %s: %v", archive, err)
		}
		sm, err := sub.IndexManifest()
		if err != nil {
			t.Fatalf("reading the platform index of %s: %v", archive, err)
		}
		for _, p := range sm.Manifests {
			if p.Platform != nil && p.Platform.OS == "linux" && p.Platform.Architecture == runtime.GOARCH {
				img, err := sub.Image(p.Digest)
				if err != nil {
					t.Fatalf("reading the %s image of %s: %v", runtime.GOARCH, archive, err)
				}
				return img
			}
		}
		t.Fatalf("%s has no linux/%s image under the tag %s", archive, runtime.GOARCH, version)
	}
	t.Fatalf("%s has no image tagged %s", archive, version)
	return nil
}

// untar writes the regular files and directories of a tar file under dir.
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+hdr.Name)))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if total += hdr.Size; total > maxUnpacked {
				return fmt.Errorf("more than %d MiB unpacked", maxUnpacked>>20)
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected entry %s (type %q) in an OCI archive", hdr.Name, hdr.Typeflag)
		}
	}
}

// archivePaths reads the OCI archive of each image from build.sh's table,
// whose rows end with the archive's path.
func archivePaths(t *testing.T, table, version string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, name := range images {
			if strings.HasSuffix(fields[0], "/"+name+":"+version) {
				paths[name] = fields[len(fields)-1]
			}
		}
	}
	for _, name := range images {
		if paths[name] == "" {
			t.Fatalf("build.sh reported no archive of %s:%s; its table:\n%s", name, version, table)
		}
	}
	return paths
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// withoutEnv is the environment less the named variables.
func withoutEnv(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, k) {
			env = append(env, kv)
		}
	}
	return env
}
