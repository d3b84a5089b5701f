package harness

import (
	"context"
	"fmt"
	"os"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfig renders a kubeconfig for user that authenticates with token,
// or, when tokenFile is set, with the token read from that file (client-go
// re-reads it, so a test can rotate it).
func (c *Cluster) kubeconfig(user, token, tokenFile string) []byte {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{
		Server:                   c.Server(),
		CertificateAuthorityData: c.ca.certPEM,
	}
	auth := &clientcmdapi.AuthInfo{}
	if tokenFile != "" {
		auth.TokenFile = tokenFile
	} else {
		auth.Token = token
	}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "e2e"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		// Write fails only for types it cannot encode, never for this one.
		panic(fmt.Sprintf("harness: encode kubeconfig: %v", err))
	}
	return data
}

// UserKubeconfig writes and returns a kubeconfig for one of Options.Users.
func (c *Cluster) UserKubeconfig(user string) (string, error) {
	token, ok := c.tokens[user]
	if !ok {
		return "", fmt.Errorf("harness: no static user %q: list it in Options.Users", user)
	}
	path := c.path("user-" + safeName(user) + ".kubeconfig")
	if err := os.WriteFile(path, c.kubeconfig(user, token, ""), 0o600); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return path, nil
}

// ServiceAccountKubeconfig creates the ServiceAccount namespace/name if it
// does not exist, requests a token for it (valid for 24 hours), writes the
// token to a file and returns a kubeconfig whose user reads that tokenFile,
// as a pod's in-cluster client reads its projected token. The second result
// is the token file, which a test may overwrite to rotate the token.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (kubeconfig, tokenFile string, err error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	_, err = c.client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", "", fmt.Errorf("harness: create ServiceAccount %s/%s: %w", namespace, name, err)
	}
	seconds := int64(24 * 3600)
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("harness: request token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	base := "sa-" + safeName(namespace) + "-" + safeName(name)
	tokenFile = c.path(base + ".token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	kubeconfig = c.path(base + ".kubeconfig")
	data := c.kubeconfig(user, "", tokenFile)
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	return kubeconfig, tokenFile, nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}
