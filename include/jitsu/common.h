/* libjitsu: common definitions (errors, logging, versions). */
#ifndef JITSU_COMMON_H
#define JITSU_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JITSU_VERSION_MAJOR 0
#define JITSU_VERSION_MINOR 2
#define JITSU_VERSION_PATCH 0
#define JITSU_VERSION_STRING "0.2.0"

#if defined(__GNUC__)
#define JITSU_EXTERN __attribute__((visibility("default")))
#else
#define JITSU_EXTERN
#endif

/*
 * Errors are negative errno values, as in libuv. A few errno values carry a
 * libjitsu-specific meaning; jitsu_strerror() describes them in those terms.
 */
#define JITSU_ESTATE (-EBADFD)       /* not allowed in the vm's current state */
#define JITSU_ELIMIT (-EUSERS)       /* max-live or max-starting reached */
#define JITSU_EEXITED (-ECHILD)      /* the guest exited before it was ready */
#define JITSU_ETIMEDOUT (-ETIMEDOUT) /* not ready within ready-timeout */
#define JITSU_ECANCELED (-ECANCELED) /* a stop, vm or ctx went first */

/* Describe (err), a negative errno value; never returns NULL. */
JITSU_EXTERN const char *jitsu_strerror(int err);

/* The library version as a string, e.g. "0.1.0". */
JITSU_EXTERN const char *jitsu_version(void);

/*
 * A detailed error, filled in by calls that can fail for reasons a number
 * cannot carry (configuration, vm definition). (file) and (line) are set
 * when the error comes from a configuration file, (key) when one key is at
 * fault; (message) is always a complete sentence for a human, already
 * prefixed with "file:line: key: " where those are known.
 */
typedef struct jitsu_error {
  int code;
  unsigned line;
  char file[256];
  char key[64];
  char message[768];
} jitsu_error;

typedef enum jitsu_log_level {
  JITSU_LOG_ERROR = 0,
  JITSU_LOG_WARNING = 1,
  JITSU_LOG_INFO = 2,
  JITSU_LOG_DEBUG = 3,
} jitsu_log_level;

/* The name of (level): "error", "warning", "info" or "debug". */
JITSU_EXTERN const char *jitsu_log_level_name(jitsu_log_level level);

#ifdef __cplusplus
}
#endif
#endif
