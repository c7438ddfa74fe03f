package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshroot/meshroot/internal/kubeclient"
)

// NewFolder returns a stand-in for a cluster's API that keeps what the
// agent writes as files in dir, for running the agent without Kubernetes
// (`meshroot agent --out DIR`). The cacerts Secret named secret becomes the
// files of dir itself (ca-cert.pem, ca-key.pem, cert-chain.pem,
// root-cert.pem); any other Secret or ConfigMap (the federated bundles)
// becomes a subfolder of that name.
//
// Each object is written the way the kubelet updates a mounted Secret: the
// files go into a new hidden folder, the symlink ..data is swapped to it in
// one rename, and every file name is a symlink through ..data, so a reader
// sees the old set or the new set, never a mix. Files are 0600. Writes
// carry a resourceVersion (kept in ..data/..meta.json, with the labels and
// annotations) and fail with a conflict when it changed since the read,
// under a lock file, like the API server's.
//
// It implements only the calls the agent makes: Secrets and ConfigMaps
// Get, Create and Update, and a Deployments Get that finds no istiod (so
// none is restarted). Patching a Deployment and requesting a token fail.
func NewFolder(dir string, secret SecretRef) (kubeclient.Interface, error) {
	if dir == "" {
		return nil, errors.New("agent: no output folder")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	if secret == (SecretRef{}) {
		secret = DefaultSecret
	}
	f := &folder{dir: dir, secret: secret.Name}
	return &folderKube{f: f}, nil
}

// folder maps objects to subfolders of dir.
type folder struct {
	dir    string
	secret string // the Secret stored in dir itself
}

// objectDir is where the object of kind and name lives.
func (f *folder) objectDir(kind, name string) (string, error) {
	if !validFileName(name) {
		return "", fmt.Errorf("%s name %q cannot be a file name", kind, name)
	}
	if kind == "secret" && name == f.secret {
		return f.dir, nil
	}
	return filepath.Join(f.dir, name), nil
}

// stored is an object as kept on disk: metadata and files.
type stored struct {
	Meta  metav1.ObjectMeta `json:"metadata"`
	Type  string            `json:"type,omitempty"`
	Files map[string][]byte `json:"-"`
}

const (
	dataLink     = "..data"
	metaFile     = "..meta.json"
	lockFile     = "..lock"
	maxFolderObj = 4 << 20 // bound on what one object's files add up to
)

var fileNameRE = regexp.MustCompile(`^[A-Za-z0-9][-._A-Za-z0-9]*$`)

func validFileName(s string) bool { return len(s) <= 253 && fileNameRE.MatchString(s) }

// read returns the object in dir, or nil when there is none.
func read(dir string) (*stored, error) {
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, filepath.Base(target))
	raw, err := readFileBounded(filepath.Join(data, metaFile), 1<<20)
	if err != nil {
		return nil, err
	}
	var s stored
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(data, metaFile), err)
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		return nil, err
	}
	s.Files = map[string][]byte{}
	total := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || !e.Type().IsRegular() {
			continue
		}
		b, err := readFileBounded(filepath.Join(data, e.Name()), maxFolderObj-total)
		if err != nil {
			return nil, err
		}
		total += len(b)
		s.Files[e.Name()] = b
	}
	return &s, nil
}

func readFileBounded(path string, limit int) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return b, nil
}

// write replaces the object in dir: files into a new folder, one symlink
// per file name through ..data, ..data swapped to the new folder in one
// rename, then the old folder and the names no longer in the set are
// removed.
func write(dir string, s *stored) error {
	for name := range s.Files {
		if !validFileName(name) {
			return fmt.Errorf("key %q cannot be a file name", name)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	meta, err := json.Marshal(s)
	if err != nil {
		return err
	}
	files := map[string][]byte{metaFile: meta}
	for k, v := range s.Files {
		files[k] = v
	}
	for name, b := range files {
		if err := writeSynced(filepath.Join(ts, name), b); err != nil {
			os.RemoveAll(ts)
			return err
		}
	}
	// Each name's link through ..data before ..data moves: on the first
	// write (and for a name new to the set) the links dangle until the
	// rename, so that a reader sees every file appear at once, never
	// ca-cert.pem without root-cert.pem.
	for name := range s.Files {
		link := filepath.Join(dir, name)
		if t, err := os.Readlink(link); err == nil && t == filepath.Join(dataLink, name) {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join(dataLink, name), link); err != nil {
			os.RemoveAll(ts)
			return err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
		os.RemoveAll(ts)
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataLink)); err != nil {
		os.RemoveAll(ts)
		return err
	}
	syncDir(dir)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		link := filepath.Join(dir, e.Name())
		t, err := os.Readlink(link)
		if err != nil || !strings.HasPrefix(t, dataLink+string(filepath.Separator)) {
			continue
		}
		if _, ok := s.Files[e.Name()]; !ok {
			_ = os.Remove(link)
		}
	}
	if old != "" && filepath.Base(old) != filepath.Base(ts) {
		_ = os.RemoveAll(filepath.Join(dir, filepath.Base(old)))
	}
	return nil
}

func writeSynced(path string, b []byte) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(b); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// locked runs fn holding an exclusive lock on the folder, so that the
// resourceVersion check and the write are one step.
func (f *folder) locked(fn func() error) error {
	fh, err := os.OpenFile(filepath.Join(f.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(fh.Fd()), syscall.LOCK_UN) //nolint:errcheck
	return fn()
}

// get reads an object, NotFound when absent.
func (f *folder) get(kind, name string) (*stored, error) {
	dir, err := f.objectDir(kind, name)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	s, err := read(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	if s == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: kind + "s"}, name)
	}
	return s, nil
}

// put creates (create) or updates the object, checking the
// resourceVersion of an update against the one stored.
func (f *folder) put(kind string, s *stored, create bool) (*stored, error) {
	dir, err := f.objectDir(kind, s.Meta.Name)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	gr := schema.GroupResource{Resource: kind + "s"}
	err = f.locked(func() error {
		cur, err := read(dir)
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, err)
		}
		switch {
		case create && cur != nil:
			return apierrors.NewAlreadyExists(gr, s.Meta.Name)
		case !create && cur == nil:
			return apierrors.NewNotFound(gr, s.Meta.Name)
		case !create && s.Meta.ResourceVersion != cur.Meta.ResourceVersion:
			return apierrors.NewConflict(gr, s.Meta.Name, fmt.Errorf("the object in %s changed since it was read", dir))
		}
		rv := uint64(0)
		if cur != nil {
			rv, _ = strconv.ParseUint(cur.Meta.ResourceVersion, 10, 64)
		}
		s.Meta.ResourceVersion = strconv.FormatUint(rv+1, 10)
		if create {
			s.Meta.CreationTimestamp = metav1.Now()
		}
		return write(dir, s)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// The client: kubeclient.Interface over the folder.

type folderKube struct{ f *folder }

func (k *folderKube) Secrets(string) kubeclient.SecretInterface { return folderSecrets{f: k.f} }
func (k *folderKube) ConfigMaps(string) kubeclient.ConfigMapInterface {
	return folderConfigMaps{f: k.f}
}
func (k *folderKube) ServiceAccounts(string) kubeclient.ServiceAccountInterface {
	return folderServiceAccounts{}
}
func (k *folderKube) Deployments(string) kubeclient.DeploymentInterface { return folderDeployments{} }

type folderSecrets struct{ f *folder }

func (s folderSecrets) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Secret, error) {
	st, err := s.f.get("secret", name)
	if err != nil {
		return nil, err
	}
	return &kubeclient.Secret{ObjectMeta: st.Meta, Type: st.Type, Data: st.Files}, nil
}

func (s folderSecrets) Create(_ context.Context, sec *kubeclient.Secret, _ metav1.CreateOptions) (*kubeclient.Secret, error) {
	return s.put(sec, true)
}

func (s folderSecrets) Update(_ context.Context, sec *kubeclient.Secret, _ metav1.UpdateOptions) (*kubeclient.Secret, error) {
	return s.put(sec, false)
}

// UpdateMeta is Update: the answer is built from what was written, with
// no copy of the files to skip.
func (s folderSecrets) UpdateMeta(ctx context.Context, sec *kubeclient.Secret, opts metav1.UpdateOptions) (*kubeclient.Secret, error) {
	return s.Update(ctx, sec, opts)
}

func (s folderSecrets) put(sec *kubeclient.Secret, create bool) (*kubeclient.Secret, error) {
	files := map[string][]byte{}
	for k, v := range sec.Data {
		files[k] = v
	}
	for k, v := range sec.StringData {
		files[k] = []byte(v)
	}
	st, err := s.f.put("secret", &stored{Meta: *sec.ObjectMeta.DeepCopy(), Type: string(sec.Type), Files: files}, create)
	if err != nil {
		return nil, err
	}
	return &kubeclient.Secret{ObjectMeta: st.Meta, Type: sec.Type, Data: files}, nil
}

type folderConfigMaps struct{ f *folder }

func (c folderConfigMaps) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.ConfigMap, error) {
	st, err := c.f.get("configmap", name)
	if err != nil {
		return nil, err
	}
	data := map[string]string{}
	for k, v := range st.Files {
		data[k] = string(v)
	}
	return &kubeclient.ConfigMap{ObjectMeta: st.Meta, Data: data}, nil
}

func (c folderConfigMaps) Create(_ context.Context, cm *kubeclient.ConfigMap, _ metav1.CreateOptions) (*kubeclient.ConfigMap, error) {
	return c.put(cm, true)
}

func (c folderConfigMaps) Update(_ context.Context, cm *kubeclient.ConfigMap, _ metav1.UpdateOptions) (*kubeclient.ConfigMap, error) {
	return c.put(cm, false)
}

func (c folderConfigMaps) put(cm *kubeclient.ConfigMap, create bool) (*kubeclient.ConfigMap, error) {
	files := map[string][]byte{}
	for k, v := range cm.Data {
		files[k] = []byte(v)
	}
	st, err := c.f.put("configmap", &stored{Meta: *cm.ObjectMeta.DeepCopy(), Files: files}, create)
	if err != nil {
		return nil, err
	}
	out := cm.DeepCopy()
	out.ObjectMeta = st.Meta
	return out, nil
}

type folderDeployments struct{}

// Get finds no Deployment: there is no istiod to restart next to a folder.
func (folderDeployments) Get(_ context.Context, name string, _ metav1.GetOptions) (*kubeclient.Deployment, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "apps", Resource: "deployments"}, name)
}

// Patch is never reached (Get finds no istiod to restart); it refuses.
func (folderDeployments) Patch(_ context.Context, name string, _ types.PatchType, _ []byte, _ metav1.PatchOptions, _ ...string) (*kubeclient.Deployment, error) {
	return nil, fmt.Errorf("deployment %s: there is no cluster next to an output folder", name)
}

type folderServiceAccounts struct{}

// CreateToken refuses: an output folder has no service accounts (the
// istiod probe needs a cluster).
func (folderServiceAccounts) CreateToken(_ context.Context, sa string, _ *authnv1.TokenRequest, _ metav1.CreateOptions) (*authnv1.TokenRequest, error) {
	return nil, fmt.Errorf("service account %s: there is no cluster next to an output folder", sa)
}
