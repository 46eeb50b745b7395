/* The process backend's private header (process*.c). */
#ifndef JITSU_BACKEND_PROCESS_H
#define JITSU_BACKEND_PROCESS_H

#include "base.h"

#include <sys/types.h>

/* A socket handed to the guest, as systemd socket activation does. */
typedef struct psock {
  struct proc *proc;
  int type; /* SOCK_STREAM or SOCK_DGRAM */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  int backlog;
  char name[64]; /* for LISTEN_FDNAMES */
  char key[128]; /* the socket trigger's key, e.g. "tcp:127.0.0.1:8080" */
  int fd;        /* -1 while an adopted guest holds the socket */
  uv_poll_t *poll;
  bool polling;
} psock;

typedef struct proc {
  jitsu_vm *vm;
  char **argv;
  char **env; /* "KEY=VALUE", NULL-terminated */
  char *workdir;
  bool set_user, set_group;
  uid_t uid;
  gid_t gid;
  psock *socks;
  size_t n_socks;
  uint64_t memory_max; /* RLIMIT_AS, 0: none */
  uint64_t files_max;  /* RLIMIT_NOFILE, 0: inherited */
  /* The live guest. */
  pid_t pid; /* also its process group: the guest starts a session */
  int pidfd;
  unsigned long long starttime; /* from /proc/PID/stat, against pid reuse */
  bool stopping;
  uv_poll_t *exit_poll;   /* on the pidfd */
  uv_timer_t *exit_timer; /* without pidfd_open(2): looks every 20 ms */
  uv_timer_t *timer;      /* stop grace, suspend/resume confirmation */
  unsigned checks;
  uv_timer_t *rearm;        /* socket trigger back-off after a failure */
  unsigned failures_in_row; /* failed starts since the last ready */
  uv_timer_t *activity;     /* while ready: the sockets are watched again */
  struct spawn_job *job;    /* a start in flight */
  bool stop_asked;          /* while it was: stop it once it has started */
  jitsu_stop_mode stop_mode;
  uint64_t stop_grace_ms;
} proc;

/* Parse "tcp HOST:PORT [name=N] [backlog=N]" / "udp HOST:PORT [name=N]" /
 * "unix /PATH [name=N] [backlog=N]" into (s); 0 or -EINVAL with (why). */
int process_socket_parse(const char *spec, psock *s, const char **why);

/* Bind (s) (fd >= 0 on success); a negative errno value. */
int process_socket_bind(psock *s);

/* Take the adopted guest's copy of (s) from its descriptor (target) through
 * (pidfd); 0, or a negative errno value and the socket is bound again when
 * the guest exits. */
int process_socket_take(psock *s, int pidfd, int target);

/* Start or stop the socket triggers of (p) for the state (state). */
void process_sockets_arm(proc *p, jitsu_state state);

/* The connections open on the guest's TCP sockets now (the kernel's
 * socket diagnostics), or a negative errno value. */
int process_sockets_busy(proc *p);

/* Close the sockets and their poll handles. */
void process_sockets_close(proc *p);

/* Start the guest of (p): everything is prepared here, then a worker
 * thread of libuv's pool clones and waits for the exec (process_spawn.c),
 * and process_spawned() hears how it went, on the loop. 0 (p->job set), or
 * a negative errno value with a reason set on the vm. */
int process_spawn(proc *p);
/* The start of (p) ended: 0 with p->pid, p->pidfd (a pidfd, or -errno
 * from pidfd_open) and p->starttime set, all taken in the worker; or a
 * negative errno value with a reason set (process.c). */
void process_spawned(proc *p, int err);
/* The vm lets go of (p) while its start is in flight: the job finishes
 * alone (a guest it started is left, with its record, for adoption). */
void process_spawn_forget(proc *p);

/* The guest record: "<state>/process/<name>.pid". */
void process_record_remove(proc *p);
/* Find a live guest from its record; 1 with pid, pidfd, starttime set. */
int process_record_adopt(proc *p);

#endif
