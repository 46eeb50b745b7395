/* The qemu backend: the command line, the descriptors QEMU gets, tap
 * devices, fork/exec, and the guest record. */
#include "qemu.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define QEMU_LOG_ROTATE (1024 * 1024)
/* The descriptors QEMU finds open. */
enum { FD_QMP = 3, FD_SERIAL = 4, FD_TAP = 5, FD_IMAGE = 6, FD_ERR = 7 };

int qemu_path(qvm *q, const char *suffix, char *out, size_t size) {
  char dir[512];
  int r = jitsu_ctx_state_subdir(jitsu_vm_ctx(q->vm), "qemu", dir, sizeof(dir));
  if (r < 0)
    return r;
  bool own = q->tag[0] != '\0' &&
             (strcmp(suffix, "pid") == 0 || strcmp(suffix, "qmp") == 0 ||
              strcmp(suffix, "args") == 0 || strcmp(suffix, "fwd") == 0);
  if (snprintf(out, size, "%s/%s%s%s.%s", dir, jitsu_vm_name(q->vm),
               own ? "." : "", own ? q->tag : "", suffix) >= (int)size)
    return -ENAMETOOLONG;
  return 0;
}

bool qemu_kvm_usable(void) {
  return (access("/sys/module/kvm_intel", F_OK) == 0 ||
          access("/sys/module/kvm_amd", F_OK) == 0) &&
         access("/dev/kvm", R_OK | W_OK) == 0;
}

/* The host's TSC frequency in kHz, or 0 when unknown. */
static unsigned long tsc_khz(void) {
  unsigned long khz = 0;
  FILE *f = fopen("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "re");
  if (f != NULL) {
    if (fscanf(f, "%lu", &khz) != 1)
      khz = 0;
    fclose(f);
    if (khz > 0)
      return khz;
  }
  f = fopen("/proc/cpuinfo", "re");
  if (f == NULL)
    return 0;
  char line[256];
  double mhz = 0;
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "cpu MHz : %lf", &mhz) == 1)
      break;
  fclose(f);
  return (unsigned long)(mhz * 1000);
}

typedef struct argv_b {
  char **v;
  size_t n, cap;
  bool failed;
} argv_b;

static void add(argv_b *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add(argv_b *a, const char *fmt, ...) {
  if (a->failed)
    return;
  if (a->n + 2 > a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 48;
    char **v = realloc(a->v, cap * sizeof(*v));
    if (v == NULL) {
      a->failed = true;
      return;
    }
    a->v = v;
    a->cap = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0)
    s = NULL;
  va_end(ap);
  if (s == NULL) {
    a->failed = true;
    return;
  }
  a->v[a->n++] = s;
  a->v[a->n] = NULL;
}

static void argv_free(char **v) {
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

static bool is_microvm(const qvm *q) {
  return strncmp(q->machine, "microvm", 7) == 0 &&
         (q->machine[7] == '\0' || q->machine[7] == ',');
}

static bool use_kvm(const qvm *q) {
  return q->accel == QACCEL_KVM ||
         (q->accel == QACCEL_AUTO && qemu_kvm_usable());
}

/* A stable locally administered MAC from the vm's name. */
static void default_mac(const qvm *q, char out[18]) {
  static const jitsu_hash_key fixed = {0, 0}; /* the same on every host */
  const char *name = jitsu_vm_name(q->vm);
  unsigned h = (unsigned)jitsu_hash(&fixed, name, strlen(name));
  snprintf(out, 18, "52:54:00:%02x:%02x:%02x", (h >> 16) & 0xff,
           (h >> 8) & 0xff, h & 0xff);
}

/* (with_fds): the real command line; otherwise the words that decide what
 * a saved image fits (no descriptors, no forwards, no incoming). */
static char **build_argv(qvm *q, bool incoming, bool with_fds) {
  argv_b a = {0};
  bool kvm = use_kvm(q);
  add(&a, "%s", q->binary);
  add(&a, "-name");
  add(&a, "guest=%s,debug-threads=on", jitsu_vm_name(q->vm));
  add(&a, "-machine");
  add(&a, "%s", q->machine);
  add(&a, "-accel");
  add(&a, "%s", kvm ? "kvm" : "tcg");
  add(&a, "-cpu");
  add(&a, "%s", q->cpu ? q->cpu : kvm ? "host" : "max");
  add(&a, "-m");
  add(&a, "%lluM", (unsigned long long)(q->memory >> 20));
  add(&a, "-smp");
  add(&a, "%u", q->vcpus);
  add(&a, "-nodefaults");
  add(&a, "-no-user-config");
  add(&a, "-display");
  add(&a, "none");
  add(&a, "-no-reboot");
  add(&a, "-kernel");
  add(&a, "%s", q->kernel);
  if (q->initrd != NULL) {
    add(&a, "-initrd");
    add(&a, "%s", q->initrd);
  }
  unsigned long khz = q->tsc_hint && !kvm ? tsc_khz() : 0;
  if (q->cmdline != NULL || khz > 0) {
    add(&a, "-append");
    if (khz > 0)
      add(&a, "%s%stsc_early_khz=%lu tsc=reliable no_timer_check",
          q->cmdline ? q->cmdline : "", q->cmdline ? " " : "", khz);
    else
      add(&a, "%s", q->cmdline);
  }
  if (with_fds) {
    add(&a, "-chardev");
    add(&a, "socket,id=jitsu-qmp,fd=%d,server=on,wait=off", FD_QMP);
    add(&a, "-mon");
    add(&a, "chardev=jitsu-qmp,mode=control");
  }
  add(&a, "-chardev");
  add(&a, "socket,id=jitsu-con,fd=%d", FD_SERIAL);
  add(&a, "-serial");
  add(&a, "chardev:jitsu-con");
  if (q->net != QNET_NONE) {
    char mac[18];
    if (q->mac == NULL)
      default_mac(q, mac);
    add(&a, "-netdev");
    if (q->net == QNET_TAP) {
      add(&a, "tap,id=jitsu-net,fd=%d", FD_TAP);
    } else if (!with_fds || q->spare != QSPARE_NO) {
      add(&a, "user,id=jitsu-net"); /* a spare's forwards come when taken */
    } else {
      size_t len = strlen("user,id=jitsu-net") + 1;
      const char *fw;
      for (size_t i = 0; (fw = jitsu_vm_param(q->vm, "forward", i)); i++)
        len += strlen(",hostfwd=") + strlen(fw);
      char *s = malloc(len);
      if (s == NULL) {
        a.failed = true;
      } else {
        strcpy(s, "user,id=jitsu-net");
        for (size_t i = 0; (fw = jitsu_vm_param(q->vm, "forward", i)); i++)
          strcat(strcat(s, ",hostfwd="), fw);
        add(&a, "%s", s);
        free(s);
      }
    }
    add(&a, "-device");
    add(&a, "%s,netdev=jitsu-net,mac=%s",
        is_microvm(q) ? "virtio-net-device" : "virtio-net-pci",
        q->mac ? q->mac : mac);
  }
  if (incoming && with_fds) {
    add(&a, "-incoming");
    add(&a, "defer");
  }
  for (size_t i = 0; q->extra && q->extra[i]; i++)
    add(&a, "%s", q->extra[i]);
  if (a.failed) {
    argv_free(a.v);
    return NULL;
  }
  return a.v;
}

char **qemu_argv(qvm *q, bool incoming) {
  return build_argv(q, incoming, true);
}

void qemu_argv_free(char **v) {
  argv_free(v);
}

char *qemu_describe_args(qvm *q) {
  char **v = build_argv(q, false, false);
  if (v == NULL)
    return NULL;
  size_t len = 1;
  for (size_t i = 0; v[i]; i++)
    len += strlen(v[i]) + 1;
  char *s = malloc(len);
  if (s != NULL) {
    s[0] = '\0';
    for (size_t i = 0; v[i]; i++)
      strcat(strcat(s, v[i]), "\n");
  }
  argv_free(v);
  return s;
}

/* What the child needs, all prepared before it starts: it makes system
 * calls only (jitsu__spawn). */
typedef struct child_args {
  const char *path; /* QEMU, found on PATH by the parent */
  char **argv;
  const jitsu__child_record *rec;
  int qmp, serial, image, log; /* -1: no image */
  bool tap;
  char netns[300];       /* "/run/netns/NAME", or "" */
  char bridge[IFNAMSIZ]; /* or "" */
} child_args;

/* In the child: a tap device, up, on the bridge if one is named, at
 * FD_TAP. 0, or the errno with (*what) set. */
static int child_tap(const child_args *c, const char **what) {
  if (c->netns[0] != '\0') {
    *what = "cannot open the network namespace";
    int ns = open(c->netns, O_RDONLY | O_CLOEXEC);
    if (ns < 0)
      return errno;
    *what = "cannot enter the network namespace";
    if (setns(ns, CLONE_NEWNET) < 0)
      return errno;
    close(ns);
  }
  *what = "cannot open /dev/net/tun (tap needs root)";
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  memcpy(ifr.ifr_name, "jitsu%d", sizeof("jitsu%d"));
  *what = "cannot create a tap device (needs CAP_NET_ADMIN)";
  if (ioctl(fd, TUNSETIFF, &ifr) < 0)
    return errno;
  *what = "socket";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return errno;
  struct ifreq up = ifr;
  *what = "cannot read the tap's flags";
  if (ioctl(s, SIOCGIFFLAGS, &up) < 0)
    return errno;
  up.ifr_flags |= IFF_UP;
  *what = "cannot bring the tap up";
  if (ioctl(s, SIOCSIFFLAGS, &up) < 0)
    return errno;
  close(s);
  int e = c->bridge[0] ? jitsu__bridge_port(c->bridge, ifr.ifr_name, true, what)
                       : 0;
  if (e != 0)
    return e;
  *what = "dup2";
  return dup2(fd, FD_TAP) < 0 ? errno : 0;
}

/* Adding a tap to a bridge, in a network namespace when (netns) is set:
 * in a thread of its own, which enters it (a namespace is a thread's). */
typedef struct tap_join {
  char netns[300], bridge[IFNAMSIZ], tap[IFNAMSIZ];
  int err;
  const char *what;
} tap_join;

static void *tap_join_main(void *arg) {
  tap_join *j = arg;
  if (j->netns[0] != '\0') {
    j->what = "cannot enter the network namespace";
    int ns = open(j->netns, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
      j->err = errno;
      if (ns >= 0)
        close(ns);
      return NULL;
    }
    close(ns);
  }
  j->err = jitsu__bridge_port(j->bridge, j->tap, true, &j->what);
  return NULL;
}

int qemu_tap_join(qvm *q, char *why, size_t size) {
  tap_join j = {.err = 0, .what = NULL};
  char path[64], line[128];
  snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)q->pid, FD_TAP);
  FILE *f = fopen(path, "re");
  while (f != NULL && fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "iff: %15s", j.tap) == 1)
      break;
  if (f != NULL)
    fclose(f);
  if (j.tap[0] == '\0') {
    snprintf(why, size, "cannot find QEMU %d's tap (%s)", (int)q->pid, path);
    return -ENOENT;
  }
  snprintf(j.bridge, sizeof(j.bridge), "%s", q->bridge ? q->bridge : "");
  if (q->netns != NULL)
    snprintf(j.netns, sizeof(j.netns), "/run/netns/%s", q->netns);
  pthread_t t;
  if (q->netns == NULL)
    tap_join_main(&j);
  else if ((j.err = pthread_create(&t, NULL, tap_join_main, &j)) != 0)
    j.what = "cannot start a thread";
  else
    pthread_join(t, NULL);
  if (j.err == 0)
    return 0;
  snprintf(why, size, "%s %s%s%s (bridge %s): %s", j.what, j.tap,
           q->netns ? " in " : "", q->netns ? q->netns : "", j.bridge,
           strerror(j.err));
  return -j.err;
}

static int open_qemu_log(qvm *q) {
  char path[600];
  int r = qemu_path(q, "log", path, sizeof(path));
  if (r < 0)
    return r;
  struct stat st;
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW;
  if (stat(path, &st) == 0 && st.st_size > QEMU_LOG_ROTATE)
    flags |= O_TRUNC;
  int fd = open(path, flags, 0600);
  if (fd < 0)
    return -errno;
  q->qemu_log_start = lseek(fd, 0, SEEK_END);
  return fd;
}

void qemu_last_message(qvm *q, char *out, size_t size) {
  char path[600], buf[2048];
  out[0] = '\0';
  if (qemu_path(q, "log", path, sizeof(path)) < 0)
    return;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  off_t end = lseek(fd, 0, SEEK_END);
  off_t from = end - (off_t)sizeof(buf) + 1;
  if (from < q->qemu_log_start)
    from = q->qemu_log_start;
  ssize_t n = from < end ? pread(fd, buf, (size_t)(end - from), from) : 0;
  close(fd);
  if (n <= 0)
    return;
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    buf[--n] = '\0';
  char *line = strrchr(buf, '\n');
  snprintf(out, size, "%s", line ? line + 1 : buf);
}

/* A listening socket at the QMP path, made before QEMU exists. */
static int qmp_listen(qvm *q, char *path, size_t size) {
  int r = qemu_path(q, "qmp", path, size);
  if (r < 0)
    return r;
  char why[700];
  return jitsu__listen_unix("QMP socket", path, SOCK_STREAM, 4, 0, false, why,
                            sizeof(why));
}

int qemu_connect_qmp(qvm *q) {
  char path[600];
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  int r = qemu_path(q, "qmp", path, sizeof(path));
  if (r < 0)
    return r;
  if (strlen(path) >= sizeof(sun.sun_path))
    return -ENAMETOOLONG;
  strcpy(sun.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    r = -errno;
    close(fd);
    return r;
  }
  return fd;
}

/* QEMU's child before its exec: the guest record, then the descriptors at
 * their numbers (all sources moved above 100 first, so that no dup2
 * overwrites one still needed), the tap, and the exec. */
static int child(void *arg, int *errfd, const char **what) {
  child_args *c = arg;
  *what = "setsid";
  if (setsid() < 0)
    return errno;
  *what = "cannot write the guest record";
  if (jitsu__child_record_write(c->rec) < 0)
    return errno;
  *what = "cannot place QEMU's descriptors";
  int e = fcntl(*errfd, F_DUPFD_CLOEXEC, 100);
  if (e < 0)
    return errno;
  *errfd = e;
  int l = fcntl(c->qmp, F_DUPFD, 100), s = fcntl(c->serial, F_DUPFD, 100);
  int img = c->image >= 0 ? fcntl(c->image, F_DUPFD, 100) : -1;
  int lg = fcntl(c->log, F_DUPFD, 100);
  int null = open("/dev/null", O_RDONLY);
  if (l < 0 || s < 0 || lg < 0 || null < 0 || (c->image >= 0 && img < 0))
    return errno;
  *what = "dup2";
  int from[] = {null, lg, lg, l, s};
  int to[] = {0, 1, 2, FD_QMP, FD_SERIAL};
  for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++)
    if (dup2(from[i], to[i]) < 0)
      return errno;
  if (c->tap && (e = child_tap(c, what)) != 0)
    return e;
  *what = "dup2";
  if (img >= 0 && dup2(img, FD_IMAGE) < 0)
    return errno;
  if (dup3(*errfd, FD_ERR, O_CLOEXEC) < 0)
    return errno;
  *errfd = FD_ERR;
  syscall(SYS_close_range, FD_ERR + 1, ~0U, 0);
  *what = "cannot run QEMU";
  execv(c->path, c->argv);
  return errno;
}

int qemu_spawn(qvm *q, int image_fd, int *qmp_fd, int *serial_fd) {
  jitsu_vm *vm = q->vm;
  char qmp_path[600];
  int lfd = -1, sp[2] = {-1, -1}, logfd = -1, r;
  char **argv = build_argv(q, image_fd >= 0, true);
  if (argv == NULL)
    return -ENOMEM;
  if ((logfd = open_qemu_log(q)) < 0) {
    r = logfd;
    jitsu_vm_set_reason(vm, "cannot open QEMU's log: %s", strerror(-r));
    goto out;
  }
  if ((lfd = qmp_listen(q, qmp_path, sizeof(qmp_path))) < 0) {
    r = lfd;
    jitsu_vm_set_reason(vm, "cannot listen on the QMP socket %s: %s", qmp_path,
                        strerror(-r));
    goto out;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
    r = -errno;
    jitsu_vm_set_reason(vm, "cannot make QEMU's descriptors: %s", strerror(-r));
    goto out;
  }
  jitsu__child_record rec;
  char rpath[600];
  if ((r = qemu_path(q, "pid", rpath, sizeof(rpath))) < 0 ||
      (r = jitsu__child_record_prepare(&rec, rpath)) < 0) {
    jitsu_vm_set_reason(vm, "cannot prepare the guest record: %s",
                        strerror(-r));
    goto out;
  }
  child_args c = {.argv = argv,
                  .rec = &rec,
                  .qmp = lfd,
                  .serial = sp[1],
                  .image = image_fd,
                  .log = logfd,
                  .tap = q->net == QNET_TAP};
  char path[4096];
  if ((r = jitsu__resolve_exec(q->binary, environ, path, sizeof(path))) < 0) {
    jitsu_vm_set_reason(vm, "cannot run QEMU: %s: %s", q->binary, strerror(-r));
    goto out;
  }
  c.path = path;
  if (q->netns != NULL && snprintf(c.netns, sizeof(c.netns), "/run/netns/%s",
                                   q->netns) >= (int)sizeof(c.netns)) {
    r = -ENAMETOOLONG;
    jitsu_vm_set_reason(vm, "network namespace name too long");
    goto out;
  }
  /* A spare's tap joins the bridge when it takes the vm's place
   * (qemu_tap_join()): spares share the vm's MAC and address. */
  if (q->bridge != NULL && q->spare == QSPARE_NO)
    snprintf(c.bridge, sizeof(c.bridge), "%s", q->bridge);
  const char *what;
  pid_t pid;
  if ((r = jitsu__spawn(child, &c, &pid, &what)) < 0) {
    unlink(rpath); /* if the child wrote it before it failed */
    jitsu_vm_set_reason(vm, "%s: %s (%s)", what, strerror(-r), q->binary);
    goto out;
  }
  q->pid = pid;
  q->pidfd = jitsu__pidfd_open(pid);
  /* Without pidfd_open(2) (a kernel before 5.3, or valgrind 3.19) the
   * exit is watched by pid: our child cannot be reused before we reap it. */
  int pidfd_err = q->pidfd < 0 && errno != ENOSYS ? -errno : 0;
  jitsu__proc_stat(pid, &q->starttime, NULL);
  if (pidfd_err < 0 || (*qmp_fd = qemu_connect_qmp(q)) < 0) {
    r = pidfd_err < 0 ? pidfd_err : *qmp_fd;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    unlink(rpath);
    if (q->pidfd >= 0)
      close(q->pidfd);
    q->pidfd = -1;
    q->pid = 0;
    jitsu_vm_set_reason(vm, "cannot reach QEMU's monitor: %s", strerror(-r));
    goto out;
  }
  *serial_fd = sp[0];
  sp[0] = -1;
  r = 0; /* the child wrote the guest record before its exec */
out:
  for (int i = 0; i < 2; i++) {
    if (sp[i] >= 0)
      close(sp[i]);
  }
  if (lfd >= 0)
    close(lfd);
  if (logfd >= 0)
    close(logfd);
  argv_free(argv);
  return r;
}

void qemu_record_remove(qvm *q) {
  char path[600];
  if (qemu_path(q, "pid", path, sizeof(path)) == 0)
    unlink(path);
  if (qemu_path(q, "qmp", path, sizeof(path)) == 0)
    unlink(path);
  if (q->tag[0] != '\0' && qemu_path(q, "args", path, sizeof(path)) == 0)
    unlink(path); /* a spare's fingerprint */
  if (q->tag[0] != '\0' && qemu_path(q, "fwd", path, sizeof(path)) == 0)
    unlink(path); /* the forwards it holds */
}

int qemu_record_adopt(qvm *q) {
  char path[600];
  if (qemu_path(q, "pid", path, sizeof(path)) < 0)
    return 0;
  int r = jitsu__record_adopt(path, &q->pid, &q->pidfd, &q->starttime);
  if (r == -ESTALE) {
    jitsu_vm_log(q->vm, JITSU_LOG_DEBUG, "removed a stale QEMU record");
    qemu_record_remove(q); /* and its QMP socket */
  }
  return r > 0;
}
