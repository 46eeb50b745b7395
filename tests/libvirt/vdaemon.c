/*
 * vdaemon: run a private libvirtd for the libvirt tests and benchmarks.
 *
 *   vdaemon DIR ADDR PORT
 *
 * DIR holds everything the daemon writes: its configuration (etc/), its
 * runtime files and sockets (run/), domain state (lib/), logs (log/) and
 * cache (cache/), bind-mounted over /etc/libvirt, /run/libvirt,
 * /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt in a mount
 * namespace of its own, so the host's libvirt (if any) is never touched.
 * The daemon listens on ADDR:PORT over TCP without authentication (tests
 * only) and on DIR/run/libvirt-sock.
 *
 * vdaemon stays the parent of the daemon and a child subreaper, so the
 * QEMU processes libvirt daemonises are reaped at once (PID 1 on these
 * machines reaps slowly) and can be killed at the end. Signals:
 *   SIGUSR1  stop the daemon, keep its guests running (a host that is down)
 *   SIGUSR2  start the daemon again (it reconnects to its running guests)
 *   SIGTERM  stop the daemon, kill every guest left, exit
 * DIR/vdaemon.pid holds vdaemon's pid and DIR/libvirtd.pid the daemon's.
 * When vdaemon's parent ends, vdaemon ends as on SIGTERM.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;
static volatile sig_atomic_t want_stop, want_start, want_exit;

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "vdaemon: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void on_signal(int sig) {
  if (sig == SIGUSR1)
    want_stop = 1;
  else if (sig == SIGUSR2)
    want_start = 1;
  else
    want_exit = 1;
}

static void put_file(const char *name, const char *fmt, ...) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f)
    die("%s: %s", path, strerror(errno));
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  if (fclose(f) != 0)
    die("%s: %s", path, strerror(errno));
}

static const char *const mounts[][2] = {
    {"etc", "/etc/libvirt"},         {"run", "/run/libvirt"},
    {"lib", "/var/lib/libvirt"},     {"log", "/var/log/libvirt"},
    {"cache", "/var/cache/libvirt"},
};

static void make_dir(const char *path) {
  if (mkdir(path, 0755) < 0 && errno != EEXIST)
    die("mkdir %s: %s", path, strerror(errno));
}

/* In the child: a private mount namespace with DIR's folders in place. */
static void enter_namespace(void) {
  if (unshare(CLONE_NEWNS) < 0)
    die("unshare(CLONE_NEWNS): %s", strerror(errno));
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    die("making / private: %s", strerror(errno));
  for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
    char src[4096];
    snprintf(src, sizeof src, "%s/%s", dir, mounts[i][0]);
    if (mount(src, mounts[i][1], NULL, MS_BIND, NULL) < 0)
      die("bind %s on %s: %s", src, mounts[i][1], strerror(errno));
  }
}

static pid_t start_daemon(void) {
  pid_t pid = fork();
  if (pid < 0)
    die("fork: %s", strerror(errno));
  if (pid == 0) {
    enter_namespace();
    char log[4096];
    snprintf(log, sizeof log, "%s/libvirtd.log", dir);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
      die("%s: %s", log, strerror(errno));
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execl("/usr/sbin/libvirtd", "libvirtd", "--listen", "-f",
          "/etc/libvirt/libvirtd.conf", "-p", "/run/libvirt/libvirtd.pid",
          (char *)NULL);
    die("exec /usr/sbin/libvirtd: %s", strerror(errno));
  }
  put_file("libvirtd.pid", "%d\n", (int)pid);
  return pid;
}

/* Kill every child left (the guests libvirt daemonised onto us). */
static void kill_children(void) {
  DIR *d = opendir("/proc");
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d))) {
    char path[300], buf[512];
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      continue;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
      continue;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    int ppid;
    if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == getpid())
      kill(atoi(e->d_name), SIGKILL);
  }
  closedir(d);
}

int main(int argc, char **argv) {
  if (argc != 4)
    die("usage: vdaemon DIR ADDR PORT");
  dir = argv[1];
  if (geteuid() != 0)
    die("needs root (mount namespace, system libvirtd)");
  if (access("/usr/sbin/libvirtd", X_OK) < 0)
    die("/usr/sbin/libvirtd is missing (apt-get install libvirt-daemon)");
  make_dir(dir);
  for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, mounts[i][0]);
    make_dir(p);
    make_dir(mounts[i][1]); /* the mount point, as libvirt-daemon-system */
  }
  put_file("etc/libvirtd.conf",
           "listen_tls = 0\nlisten_tcp = 1\nlisten_addr = \"%s\"\n"
           "tcp_port = \"%s\"\nauth_tcp = \"none\"\n"
           "auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n"
           "unix_sock_dir = \"/run/libvirt\"\n",
           argv[2], argv[3]);
  put_file("etc/qemu.conf",
           "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\n"
           "remember_owner = 0\nsecurity_driver = \"none\"\n"
           "cgroup_controllers = [ ]\nnamespaces = [ ]\n"
           "stdio_handler = \"file\"\n");
  put_file("vdaemon.pid", "%d\n", (int)getpid());
  /* A test or benchmark that dies (a time-out, a crash) ends us too, and
   * with us its daemon and guests. */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() == 1)
    want_exit = 1;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
    die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));

  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  pid_t daemon_pid = start_daemon();
  for (;;) {
    if (want_exit || want_stop) {
      if (daemon_pid > 0)
        kill(daemon_pid, SIGTERM);
      want_stop = 0;
    }
    if (want_start) {
      want_start = 0;
      if (daemon_pid <= 0 && !want_exit)
        daemon_pid = start_daemon();
    }
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0 && errno == EINTR)
      continue;
    if (pid < 0) { /* no child at all */
      if (want_exit)
        break;
      pause();
      continue;
    }
    if (pid == daemon_pid) {
      daemon_pid = 0;
      unlink("libvirtd.pid");
      if (want_exit)
        kill_children();
    }
  }
  return 0;
}
