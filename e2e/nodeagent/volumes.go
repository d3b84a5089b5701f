package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// syncVolumes writes the files of the pod's Secret and ConfigMap volumes
// under p.volDir, one folder per volume, as a kubelet projects them:
// every key as a file, or only the listed items at their paths. Files of
// keys that disappeared are removed. Other volume types are left out.
func (p *podRunner) syncVolumes(ctx context.Context) error {
	p.volMu.Lock()
	defer p.volMu.Unlock()
	for _, v := range p.pod.Spec.Volumes {
		var data map[string][]byte
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			s, err := p.a.client.CoreV1().Secrets(p.key.namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && optional(v.Secret.Optional) {
				data = nil
			} else if err != nil {
				return fmt.Errorf("volume %s: secret %q: %w", v.Name, v.Secret.SecretName, err)
			} else {
				data = s.Data
			}
			items = v.Secret.Items
		case v.ConfigMap != nil:
			cm, err := p.a.client.CoreV1().ConfigMaps(p.key.namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && optional(v.ConfigMap.Optional) {
				data = nil
			} else if err != nil {
				return fmt.Errorf("volume %s: configmap %q: %w", v.Name, v.ConfigMap.Name, err)
			} else {
				data = map[string][]byte{}
				for k, val := range cm.Data {
					data[k] = []byte(val)
				}
				for k, val := range cm.BinaryData {
					data[k] = val
				}
			}
			items = v.ConfigMap.Items
		default:
			continue
		}
		files := data
		if len(items) > 0 {
			files = map[string][]byte{}
			for _, it := range items {
				if val, ok := data[it.Key]; ok {
					files[it.Path] = val
				}
			}
		}
		if err := writeVolume(filepath.Join(p.volDir, v.Name), files); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	return nil
}

// writeVolume makes dir hold exactly files, replacing each file by rename
// so that a reader sees the old or the new content, never a mix.
func writeVolume(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, val := range files {
		path := filepath.Join(dir, filepath.Clean("/"+name))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if cur, err := os.ReadFile(path); err == nil && string(cur) == string(val) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, val, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if _, keep := files[filepath.ToSlash(rel)]; !keep {
			return os.Remove(path)
		}
		return nil
	})
}

// hostPath maps a path inside the container to the agent's copy of the
// volume mounted there.
func (c *container) hostPath(path string) (string, error) {
	var best *corev1.VolumeMount
	for i, m := range c.spec.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (best == nil || len(mp) > len(strings.TrimSuffix(best.MountPath, "/"))) {
			best = &c.spec.VolumeMounts[i]
		}
	}
	if best == nil {
		return "", fmt.Errorf("%s is on no volume mount of container %s", path, c.spec.Name)
	}
	rest := strings.TrimPrefix(path, strings.TrimSuffix(best.MountPath, "/"))
	return filepath.Join(c.pod.volDir, best.Name, best.SubPath, rest), nil
}

// readFile reads a file at a path inside the container.
func (c *container) readFile(path string) ([]byte, error) {
	host, err := c.hostPath(path)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(host)
}
