/*
 * The xl backend's definitions, on any host: keys and xl files are
 * checked when the configuration loads (no Xen is needed for that), each
 * bad value with a message naming it; and on a host without Xen a summon
 * fails with a clear reason instead of touching anything.
 */
#include "helpers.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define VM "[vm d]\nbackend = xl\n"

static void test_bad_keys(void **state) {
  fixture *f = *state;
  config_fails(f, VM "memory = 64M\n", "kernel");
  config_fails(f, VM "kernel = /k\ntype = hvm\n",
               "type: 'hvm' is not pv or pvh");
  config_fails(f, VM "kernel = /k\nmemory = 1500K\n", "memory");
  config_fails(f, VM "kernel = /k\nvcpus = 0\n", "vcpus");
  config_fails(f, VM "kernel = /k\nmemory = 256M\nmaxmem = 128M\n", "maxmem");
  config_fails(f, VM "kernel = /k\nvif = bridge\n", "is not KEY=VALUE");
  config_fails(f, VM "kernel = /k\nvif = mac=01:00:00:00:00:01\n",
               "not a unicast MAC");
  config_fails(f, VM "kernel = /k\nvif = model=e1000\n",
               "not one of bridge, mac, script, ip");
  config_fails(f, VM "kernel = /k\ndisk = /img,raw,xvda,rw,bogus=1\n", "disk");
  config_fails(f, VM "kernel = /k\nready-key = /local/domain/0/x\n",
               "ready-key");
  config_fails(f, VM "kernel = /k\nready-key = data/../../x\n", "ready-key");
  config_fails(f, VM "kernel = /k\nsuspend = swap\n", "suspend");
  config_fails(f, VM "kernel = /k\nconsole-marker = \n", "console-marker");
  config_fails(f, VM "config = /nonexistent.cfg\n", "nonexistent.cfg");
  /* libxlutil's scanner would exit the process reading a directory */
  config_fails(f, VM "config = /tmp\n", "not a regular file");
  config_fails(f, VM "config = /etc/xen/a.cfg\nkernel = /k\n",
               "exclude each other");
  /* nothing was defined by the failures */
  assert_null(jitsu_vm_find(f->ctx, "d"));
}

static void test_xl_file(void **state) {
  fixture *f = *state;
  char path[400], text[600];
  snprintf(path, sizeof(path), "%s/guest.cfg", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("name = \"g\"\nkernel = \"/boot/vmlinuz\"\nmemory = 256\n"
        "vif = [ 'bridge=xenbr0,mac=00:16:3e:01:02:03' ]\n"
        "disk = [ '/srv/g.img,raw,xvda,rw' ]\nextra = \"quiet\"\n",
        fp);
  fclose(fp);
  snprintf(text, sizeof(text), VM "config = %s\n", path);
  assert_int_equal(fixture_load(f, "%s", text), 0);
  assert_non_null(jitsu_vm_find(f->ctx, "d"));
  /* the same file under another vm, for the failures below */
  snprintf(text, sizeof(text), "[vm e]\nbackend = xl\nconfig = %s\n", path);

  /* a syntax error, with libxlutil's message and line */
  fp = fopen(path, "w");
  fputs("kernel = \"/boot/vmlinuz\"\nmemory = = 12\n", fp);
  fclose(fp);
  config_fails(f, text, "guest.cfg:2: config parsing error");
  /* xl's vif syntax is checked as ours */
  fp = fopen(path, "w");
  fputs("kernel = \"/k\"\nvif = [ 'rate=10Mb/s' ]\n", fp);
  fclose(fp);
  config_fails(f, text, "not one of bridge, mac, script, ip");
  /* no kernel: pygrub and other bootloaders are not supported */
  fp = fopen(path, "w");
  fputs("bootloader = \"pygrub\"\nmemory = 128\n", fp);
  fclose(fp);
  config_fails(f, text, "no kernel");
}

/* No Xen here (or no permission): the summon fails at once, clearly. */
static void test_no_xen(void **state) {
  fixture *f = *state;
  if (access("/proc/xen/capabilities", F_OK) == 0) {
    skip_because("this host is a Xen domain: the xen suite covers it");
  }
  assert_int_equal(fixture_load(f, VM "kernel = /k\nready = marker\n"), 0);
  jitsu_vm *vm = jitsu_vm_find(f->ctx, "d");
  static outcome o;
  o = (outcome){0};
  assert_int_equal(jitsu_vm_summon(vm, outcome_cb, &o), 0);
  assert_true(run_until(f, &o.done, 5000));
  assert_int_not_equal(o.status, 0);
  assert_int_equal(jitsu_vm_state(vm), JITSU_STATE_FAILED);
  jitsu_vm_info info = {.version = JITSU_VM_INFO_VERSION};
  jitsu_vm_info_get(vm, &info);
  assert_non_null(strstr(info.reason, "runs no Xen"));
}

static void no_accept(jitsu_chan_listener *l, jitsu_chan *c, const char *port,
                      int err, void *arg) {
  fail_msg("no channel can come without Xen");
}

static void no_connect(jitsu_chan *c, int err, void *arg) {
  fail_msg("no connect can finish without Xen");
}

/* The Xen rendezvous on a host without XenStore: a clear error at once. */
static void test_xen_rendezvous_without_xen(void **state) {
  fixture *f = *state;
  if (access("/proc/xen/capabilities", F_OK) == 0) {
    skip_because("this host is a Xen domain: the xen suite covers it");
  }
  jitsu_chan_options o = JITSU_CHAN_OPTIONS_INIT;
  o.rendezvous = "xen";
  jitsu_chan_listener *l = NULL;
  assert_int_equal(jitsu_chan_listen(&f->loop, "echo", &o, no_accept, NULL, &l),
                   -EHOSTUNREACH);
  assert_int_equal(
      jitsu_chan_connect(&f->loop, "echo", "p", &o, no_connect, NULL, NULL),
      -EHOSTUNREACH);
  run_for(f, 10);
}

int main(void) {
#define T(fn)                                                                  \
  cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(test_bad_keys),
      T(test_xl_file),
      T(test_no_xen),
      T(test_xen_rendezvous_without_xen),
  };
  return cmocka_run_group_tests_name("xl-config", tests, NULL, NULL);
}
