package sandbox

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ms2m/ms2m/pkg/manager"
)

// managerChildEnv names the kubeconfig a manager child process uses; its
// presence is what makes a program started again by the sandbox run the
// manager instead of itself.
const managerChildEnv = "MS2M_SANDBOX_MANAGER_KUBECONFIG"

// RunManagerChild runs the ms2m manager and exits when this process is a
// manager the sandbox started (see Sandbox.ManagerAsProcess), and returns
// at once otherwise. Call it first thing in main or TestMain.
func RunManagerChild() {
	kubeconfig := os.Getenv(managerChildEnv)
	if kubeconfig == "" {
		return
	}
	opts := manager.DefaultOptions()
	fs := flag.NewFlagSet("ms2m-manager", flag.ExitOnError)
	opts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err == nil {
		cfg.QPS, cfg.Burst = managerQPS, managerBurst
		err = manager.Run(ctrl.SetupSignalHandler(), cfg, opts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ms2m-manager:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startManagerProcess starts this program again as the manager, with opts
// as flags and the manager's own credentials; its log is logs/manager.log.
func (s *Sandbox) startManagerProcess(opts manager.Options) error {
	kubeconfig := filepath.Join(s.opts.Dir, "manager.kubeconfig")
	if err := writeManagerKubeconfig(kubeconfig, s); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	out, _ := logFile(s.opts.Dir, "manager")
	cmd := exec.Command(self, opts.Args()...)
	cmd.Env = append(os.Environ(), managerChildEnv+"="+kubeconfig)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sandbox: starting the manager process: %w", err)
	}
	done := s.mgrDone
	go func() {
		err := cmd.Wait()
		if out != nil {
			_ = out.Close()
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signaled() {
			err = nil // stopped or killed by the sandbox
		}
		done <- err
	}()
	s.stopMgr = func() { _ = cmd.Process.Signal(syscall.SIGTERM) }
	s.mgrKill = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	return nil
}

// writeManagerKubeconfig writes the manager's credentials (its service
// account's token, see install) as a kubeconfig only root can read.
func writeManagerKubeconfig(path string, s *Sandbox) error {
	c := s.mgrCfg
	kc := clientcmdapi.NewConfig()
	kc.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	kc.AuthInfos["ms2m-manager"] = &clientcmdapi.AuthInfo{Token: c.BearerToken}
	kc.Contexts["ms2m-manager"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: "ms2m-manager"}
	kc.CurrentContext = "ms2m-manager"
	return clientcmd.WriteToFile(*kc, path)
}
