package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// run prepares and starts the pod's containers: address, kubeconfig, init
// containers in order, then every container. Failures are reported in the
// container's status and retried with backoff, as the kubelet does.
func (pr *podRuntime) run(ctx context.Context, pod *corev1.Pod) {
	f := pr.f
	for attempt := int32(0); ; attempt++ {
		err := pr.prepare(ctx, pod)
		if err == nil {
			break
		}
		f.log.Info("pod not started yet", "pod", pr.key, "reason", err.Error())
		f.queue.Add(pr.key)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff(attempt)):
		}
		if pr.terminating() {
			return
		}
	}
	for _, c := range pr.inits {
		if !pr.runInit(ctx, c) {
			return
		}
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.phase == "terminating" {
		return
	}
	for _, c := range pr.ctrs {
		pr.startLocked(c)
	}
	pr.phase = "started"
	f.queue.Add(pr.key)
}

func (pr *podRuntime) terminating() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.phase == "terminating"
}

// prepare resolves everything a container needs before it can start.
func (pr *podRuntime) prepare(ctx context.Context, pod *corev1.Pod) error {
	f := pr.f
	if pr.ip == "" {
		ip, err := f.podIPs.get()
		if err != nil {
			return err
		}
		pr.ip = ip
	}
	if err := mkdir(pr.dir); err != nil {
		return err
	}
	kubeconfig, token, err := pr.writeKubeconfig(ctx, pod)
	if err != nil {
		pr.setWaiting("CreateContainerConfigError", err.Error())
		return err
	}
	r := envResolver{ctx: ctx, client: f.opts.Client, pod: pod, podIP: pr.ip, hostIP: pr.node.ip}
	volumes, err := pr.mountVolumes(r, token)
	if err != nil {
		pr.setWaiting("ContainerCreating", err.Error())
		return err
	}
	base := append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=" + pod.Name}, f.opts.Env...)
	if kubeconfig != "" {
		base = append(base, "KUBECONFIG="+kubeconfig)
	}
	var keys pullKeychain // the pod's pull credentials, read once needed
	for i, c := range append(append([]*container{}, pr.inits...), pr.ctrs...) {
		env, vars, err := r.resolve(&c.spec)
		if err != nil {
			pr.setWaiting("CreateContainerConfigError", err.Error())
			return err
		}
		mounts := newMountTable(c.spec.VolumeMounts, volumes, f.opts.SharedDir)
		argv := make([]string, 0, len(c.spec.Command)+len(c.spec.Args))
		for _, a := range append(append([]string{}, c.spec.Command...), c.spec.Args...) {
			argv = append(argv, mounts.rewrite(expand(a, vars)))
		}
		pr.mu.Lock()
		c.env, c.argv, c.hookSocket = append(base, mounts.rewriteEnv(env)...), argv, fmt.Sprintf("%s-%d.sock", pr.sock, i)
		c.st.imageID = "sandbox://" + c.spec.Image
		pr.mu.Unlock()
		if ref, ok := f.opts.Runtime.fromRegistry(c.spec.Image); ok {
			// Pulled with the pod's imagePullSecrets, at every start (the
			// kubelet checks a pod's credentials even for an image the
			// node holds, KubeletEnsureSecretPulledImages).
			if keys == nil {
				keys = f.podKeychain(ctx, pod)
			}
			r, isCheckpoint, err := f.opts.Runtime.restore(ctx, ref, pr.dir, c.spec.Name, pr.node.spec.flavour(), keys)
			if err != nil {
				pr.setWaiting("ErrImagePull", err.Error())
				return err
			}
			pr.node.pulled(c.spec.Image)
			if isCheckpoint {
				// CRI-O looks the base image up in the node's store and
				// does not pull it (server/container_restore.go);
				// containerd pulls it, with the node's credentials only,
				// not the pod's imagePullSecrets.
				if pr.node.spec.flavour() == FlavourContainerd && !pr.node.holds(r.baseImage) {
					if err := f.opts.Runtime.pull(ctx, r.baseImage, nodeCredentials); err != nil {
						err = fmt.Errorf("restoring container %s from checkpoint image %s: containerd pulls its base image with the node's credentials, not the pod's imagePullSecrets: %w; pull it first (ms2m's restored pods do, in their %s init container)",
							c.spec.Name, c.spec.Image, err, "ms2m-pull-base-image")
						pr.setWaiting("CreateContainerError", err.Error())
						return err
					}
					pr.node.pulled(r.baseImage)
				}
				if !pr.node.holds(r.baseImage) {
					err := fmt.Errorf("restoring container %s from checkpoint image %s: its base image %s is not on node %s, and CRI-O does not pull it for a restore: pull it first (ms2m's restored pods do, in their %s init container)",
						c.spec.Name, c.spec.Image, r.baseImage, pr.node.spec.Name, "ms2m-pull-base-image")
					pr.setWaiting("CreateContainerError", err.Error())
					return err
				}
				if err := pr.runAs(pod, c, r.user, true); err != nil {
					return err
				}
				if err := pr.node.restoreSockets(r.connectedTCP, pr.ip); err != nil {
					err = fmt.Errorf("restoring container %s from checkpoint image %s (SIMULATED CRIU): %w", c.spec.Name, c.spec.Image, err)
					pr.setWaiting("CreateContainerError", err.Error())
					return err
				}
				pr.mu.Lock()
				c.st.imageID, c.baseImage, c.argv = r.imageID, r.baseImage, r.argv
				c.binary, c.processless, c.restoreFrom = r.binary, r.binary == "", r.memory
				if len(c.spec.Env) == 0 && len(c.spec.EnvFrom) == 0 {
					c.env = append(base, r.env...) // the checkpointed environment
				}
				pr.mu.Unlock()
				f.log.Info("restoring container from checkpoint image (SIMULATED CRIU)", "pod", pr.key, "container", c.spec.Name, "image", c.spec.Image)
				continue
			}
		}
		pr.node.pulled(c.spec.Image)
		bin, project, err := f.opts.Runtime.projectBinary(c.spec.Image, argv)
		if err != nil {
			pr.setWaiting("RunContainerError", err.Error())
			return err
		}
		if err := pr.runAs(pod, c, ProjectImageUser, project); err != nil {
			return err
		}
		pr.mu.Lock()
		c.binary, c.processless = bin, !project
		pr.mu.Unlock()
	}
	return nil
}

// ProjectImageUser is the user of the project's image (the Dockerfile's
// USER): the sandbox's stand-in for reading the image config, which it
// does not pull.
const ProjectImageUser = "65532:65532"

// runAs decides the user c runs as, as the kubelet and the runtime do:
// runAsUser (the container's, else the pod's), else the image config's
// User. A runAsNonRoot container without runAsUser is verified against the
// image's User, with the kubelet's errors (pkg/kubelet/kuberuntime,
// verifyRunAsNonRoot): no User means root. imageUserKnown is false for an
// image whose config the sandbox does not read (any other image run
// without a process): no verification.
func (pr *podRuntime) runAs(pod *corev1.Pod, c *container, imageUser string, imageUserKnown bool) error {
	psc, csc := pod.Spec.SecurityContext, c.spec.SecurityContext
	var runAsUser, runAsGroup *int64
	var nonRoot *bool
	if psc != nil {
		runAsUser, runAsGroup, nonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	}
	if csc != nil {
		if csc.RunAsUser != nil {
			runAsUser = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			runAsGroup = csc.RunAsGroup
		}
		if csc.RunAsNonRoot != nil {
			nonRoot = csc.RunAsNonRoot
		}
	}
	uid, gid, numeric := parseImageUser(imageUser)
	var err error
	switch {
	case runAsUser != nil:
		uid = uint32(*runAsUser)
		if nonRoot != nil && *nonRoot && *runAsUser == 0 {
			err = errors.New("container's runAsUser breaks non-root policy (pod: " + pr.key + ", container: " + c.spec.Name + ")")
		}
	case !imageUserKnown:
	case nonRoot != nil && *nonRoot && !numeric:
		err = fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %s, container: %s)", imageUser, pr.key, c.spec.Name)
	case nonRoot != nil && *nonRoot && uid == 0:
		err = fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %s, container: %s)", pr.key, c.spec.Name)
	}
	if err != nil {
		pr.setWaiting("CreateContainerConfigError", err.Error())
		return err
	}
	if runAsGroup != nil {
		gid = uint32(*runAsGroup)
	}
	pr.mu.Lock()
	c.uid, c.gid = uid, gid
	pr.mu.Unlock()
	return nil
}

// parseImageUser reads an image config's User ("uid", "uid:gid"; "" is
// root); numeric is false for a user name.
func parseImageUser(u string) (uid, gid uint32, numeric bool) {
	if u == "" {
		return 0, 0, true
	}
	us, gs, _ := strings.Cut(u, ":")
	n, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, false
	}
	g, _ := strconv.ParseUint(gs, 10, 32)
	return uint32(n), uint32(g), true
}

func (pr *podRuntime) setWaiting(reason, msg string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, c := range pr.ctrs {
		if !c.st.running {
			c.st.waiting, c.st.message = reason, msg
		}
	}
}

// writeKubeconfig gives the pod's processes its service account's token
// (TokenRequest, bound to the pod), as a real pod's projected volume does;
// it returns the kubeconfig's path and the token.
func (pr *podRuntime) writeKubeconfig(ctx context.Context, pod *corev1.Pod) (string, string, error) {
	if pod.Spec.AutomountServiceAccountToken != nil && !*pod.Spec.AutomountServiceAccountToken {
		return "", "", nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := pr.f.opts.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(int64(24 * 3600)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: pr.f.opts.Config.Host, CertificateAuthorityData: pr.f.opts.Config.CAData}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["pod"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: sa, Namespace: pod.Namespace}
	cfg.CurrentContext = "pod"
	path := filepath.Join(pr.dir, "kubeconfig")
	return path, tr.Status.Token, clientcmd.WriteToFile(*cfg, path)
}

// runInit runs an init container to completion, retrying failures with
// backoff; false means the pod is being deleted.
func (pr *podRuntime) runInit(ctx context.Context, c *container) bool {
	for {
		pr.mu.Lock()
		if pr.phase == "terminating" {
			pr.mu.Unlock()
			return false
		}
		pr.startLocked(c)
		done := c.done
		pr.mu.Unlock()
		if done != nil {
			select {
			case <-ctx.Done():
				return false
			case <-done:
			}
		}
		pr.mu.Lock()
		ok, restarts := c.st.exitCode == 0, c.st.restartCount
		pr.mu.Unlock()
		pr.f.queue.Add(pr.key)
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff(restarts)):
		}
	}
}

// startLocked starts (or restarts) one container.
func (pr *podRuntime) startLocked(c *container) {
	now := time.Now()
	if c.st.started {
		c.st.restartCount++
	}
	// An ID as a runtime makes one (64 hex digits), under a scheme that
	// names the simulation.
	id := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", pr.uid, c.spec.Name, c.st.restartCount))
	c.st.containerID = "ms2m-sim://" + hex.EncodeToString(id[:])
	if c.cgroup != "" {
		c.cgroup.Remove()
	}
	c.cgroup = pr.node.containerCgroup(pr.uid, pr.qos, hex.EncodeToString(id[:]))
	if err := c.cgroup.Create(); err != nil {
		pr.f.log.Error(err, "creating the SIMULATED cgroup", "pod", pr.key, "container", c.spec.Name)
	}
	c.st.waiting, c.st.message = "", ""
	if c.processless || c.binary == "" {
		c.st.started, c.st.running, c.st.ready, c.st.startedAt = true, !isInit(pr, c), true, now
		if isInit(pr, c) {
			c.st.exited, c.st.finishedAt = true, now
		}
		return
	}
	err := c.startProcess(pr.dir, c.env, func(code int) { pr.exited(c, code) })
	if err != nil {
		c.st.waiting, c.st.message = "RunContainerError", err.Error()
		c.nextStart = now.Add(backoff(c.st.restartCount))
		pr.requeueAt(c.nextStart)
		return
	}
	c.st.started, c.st.running, c.st.exited, c.st.startedAt = true, true, false, now
	c.st.ready = c.spec.ReadinessProbe == nil
	if c.spec.ReadinessProbe != nil && !isInit(pr, c) {
		ctx, cancel := context.WithCancel(context.Background())
		c.probeCancel = cancel
		go probe(ctx, c.spec.ReadinessProbe, c.spec.Ports, pr.ip, func(ready bool) {
			pr.mu.Lock()
			c.st.ready = ready
			pr.mu.Unlock()
			pr.f.queue.Add(pr.key)
		})
	}
}

// requeueAt syncs the pod again once t has passed (a back-off's end). A
// timer rather than the queue's AddAfter: the delaying queue keeps one
// waiting entry per key, the earliest, so a status-update conflict's
// AddRateLimited (50 ms) replaced the back-off's wake-up, the early sync
// found the back-off still running, and the crashed container was never
// restarted.
func (pr *podRuntime) requeueAt(t time.Time) {
	time.AfterFunc(time.Until(t)+time.Millisecond, func() { pr.f.queue.Add(pr.key) })
}

func isInit(pr *podRuntime, c *container) bool {
	for _, i := range pr.inits {
		if i == c {
			return true
		}
	}
	return false
}

// exited records a process's end and schedules its restart per policy.
func (pr *podRuntime) exited(c *container, code int) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	now := time.Now()
	if c.probeCancel != nil {
		c.probeCancel()
	}
	c.st.running, c.st.ready, c.st.exited, c.st.exitCode, c.st.finishedAt = false, false, true, code, now
	term := &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: "Error", StartedAt: metav1.NewTime(c.st.startedAt),
		FinishedAt: metav1.NewTime(now), ContainerID: c.st.containerID}
	if code == 0 {
		term.Reason = "Completed"
	}
	c.st.lastTerm = term
	if pr.phase == "terminating" || isInit(pr, c) {
		return
	}
	policy := pr.f.restartPolicy(pr.key)
	if policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0) {
		c.st.waiting = "CrashLoopBackOff"
		c.st.message = fmt.Sprintf("back-off %s restarting failed container %s (exit code %d); logs in %s",
			backoff(c.st.restartCount), c.spec.Name, code, filepath.Join(pr.dir, c.spec.Name+".log"))
		c.nextStart = now.Add(backoff(c.st.restartCount))
		pr.requeueAt(c.nextStart)
		pr.f.log.Info("container exited; restarting after back-off", "pod", pr.key, "container", c.spec.Name, "exitCode", code)
	}
	pr.f.queue.Add(pr.key)
}

func (f *Fleet) restartPolicy(key string) corev1.RestartPolicy {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	if pod, err := f.pods.Pods(ns).Get(name); err == nil {
		return pod.Spec.RestartPolicy
	}
	return corev1.RestartPolicyNever
}

// refreshFieldEnv reads c's downward-API variables (fieldRef) again from
// the pod as it is now, as the kubelet does: it builds a container's
// environment at every start (kuberuntime's generateContainerConfig calls
// makeEnvironmentVariables with the current pod), so a restarted container
// sees labels and annotations changed since the pod started. Variables
// that expand others ($(VAR)) keep their first value.
func (pr *podRuntime) refreshFieldEnv(c *container, pod *corev1.Pod) {
	for _, e := range c.spec.Env {
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			continue
		}
		v, err := fieldValue(pod, pr.ip, pr.node.ip, e.ValueFrom.FieldRef.FieldPath)
		if err != nil {
			continue // it resolved when the pod started: the path is supported
		}
		for i := len(c.env) - 1; i >= 0; i-- {
			if name, _, _ := strings.Cut(c.env[i], "="); name == e.Name {
				c.env[i] = e.Name + "=" + v
				break
			}
		}
	}
}

// restartExited restarts containers whose back-off has passed.
func (pr *podRuntime) restartExited(pod *corev1.Pod) {
	for _, c := range pr.ctrs {
		if c.st.waiting == "CrashLoopBackOff" && !time.Now().Before(c.nextStart) {
			pr.refreshFieldEnv(c, pod)
			pr.startLocked(c)
		}
	}
}
