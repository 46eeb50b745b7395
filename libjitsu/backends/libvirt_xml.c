/*
 * The libvirt backend's definitions: the vm's keys, and the domain XML,
 * built from the keys or taken from the user's file (libxml2 reads it, so
 * a malformed file is a config error with its line; the domain is renamed
 * after the vm and told to stop, not restart, when its guest ends).
 */
#include "libvirt.h"

#include <arpa/inet.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdlib.h>
#include <string.h>

#define LV_XML_MAX (1 << 20)
#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"

#define X(s) ((const xmlChar *)(s))

/* "[ADDR:]HOSTPORT:GUESTPORT" -> "tcp:ADDR:HOSTPORT-:GUESTPORT", ADDR an
 * IPv4 address (default 127.0.0.1). */
static int parse_forward(const char *v, char *out, size_t size) {
  const char *g = strrchr(v, ':');
  if (g == NULL || g == v)
    return -EINVAL;
  char hostport[96];
  int n = (int)(g - v);
  int len = memchr(v, ':', (size_t)n)
                ? snprintf(hostport, sizeof(hostport), "%.*s", n, v)
                : snprintf(hostport, sizeof(hostport), "127.0.0.1:%.*s", n, v);
  struct sockaddr_storage ss;
  unsigned guest;
  if (len < 0 || (size_t)len >= sizeof(hostport) ||
      jitsu__parse_hostport(hostport, &ss) < 0 || ss.ss_family != AF_INET ||
      jitsu__parse_uint(g + 1, &guest) < 0 || guest == 0 || guest > 65535)
    return -EINVAL;
  const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
  char addr[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
  snprintf(out, size, "tcp:%s:%u-:%u", addr, ntohs(in->sin_port), guest);
  return 0;
}

static xmlNodePtr child(xmlNodePtr parent, const char *name) {
  for (xmlNodePtr c = parent->children; c != NULL; c = c->next)
    if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, X(name)) == 0)
      return c;
  return NULL;
}

/* Set <name>TEXT</name> under (parent), replacing any. */
static void set_text(xmlNodePtr parent, const char *name, const char *text) {
  xmlNodePtr c = child(parent, name);
  if (c != NULL)
    xmlNodeSetContent(c, NULL), xmlNodeAddContent(c, X(text));
  else
    xmlNewTextChild(parent, NULL, X(name), X(text));
}

/* The domain's <memory> in KiB, 0 if unknown. */
static uint64_t memory_kib(xmlNodePtr dom) {
  xmlNodePtr m = child(dom, "memory");
  if (m == NULL)
    return 0;
  xmlChar *text = xmlNodeGetContent(m), *unit = xmlGetProp(m, X("unit"));
  uint64_t v = text ? strtoull((const char *)text, NULL, 10) : 0;
  const char *u = unit ? (const char *)unit : "KiB";
  static const struct {
    const char *unit;
    uint64_t mul, div;
  } units[] = {{"b", 1, 1024},    {"bytes", 1, 1024}, {"KB", 1000, 1024},
               {"k", 1, 1},       {"KiB", 1, 1},      {"MB", 1000000, 1024},
               {"M", 1024, 1},    {"MiB", 1024, 1},   {"GB", 1000000000, 1024},
               {"G", 1048576, 1}, {"GiB", 1048576, 1}};
  uint64_t kib = 0;
  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
    if (strcmp(u, units[i].unit) == 0)
      kib = v * units[i].mul / units[i].div;
  xmlFree(text);
  xmlFree(unit);
  return kib;
}

/* What every domain of ours gets: our name, no uuid of its own (libvirt
 * makes one), and an end instead of a restart when the guest stops. */
static void adjust(xmlNodePtr dom, const char *name) {
  set_text(dom, "name", name);
  xmlNodePtr uuid = child(dom, "uuid");
  if (uuid != NULL) {
    xmlUnlinkNode(uuid);
    xmlFreeNode(uuid);
  }
  set_text(dom, "on_poweroff", "destroy");
  set_text(dom, "on_reboot", "destroy");
  set_text(dom, "on_crash", "destroy");
}

/* Keep the XML of (doc) and the paths of its <os> kernel and initrd. */
static int dump(xmlDocPtr doc, lvvm *v, jitsu_error *err) {
  xmlNodePtr os = child(xmlDocGetRootElement(doc), "os");
  static const char *const tags[] = {"kernel", "initrd"};
  char **paths[] = {&v->kernel, &v->initrd};
  for (size_t i = 0; i < 2; i++) {
    xmlNodePtr n = os ? child(os, tags[i]) : NULL;
    xmlChar *text = n ? xmlNodeGetContent(n) : NULL;
    if (text != NULL && (*paths[i] = strdup((const char *)text)) == NULL) {
      xmlFree(text);
      return jitsu_error_set(err, -ENOMEM, NULL, "%s", "out of memory");
    }
    xmlFree(text);
  }
  xmlChar *out = NULL;
  int len = 0;
  xmlDocDumpFormatMemory(doc, &out, &len, 1);
  if (out == NULL)
    return jitsu_error_set(err, -ENOMEM, NULL, "%s", "out of memory");
  v->xml = strdup((const char *)out);
  xmlFree(out);
  return v->xml ? 0
                : jitsu_error_set(err, -ENOMEM, NULL, "%s", "out of memory");
}

static int from_file(lvvm *v, jitsu_vm *vm, const char *path,
                     jitsu_error *err) {
  char why[512], *text = NULL;
  size_t len = 0;
  int r = jitsu__read_bounded(path, LV_XML_MAX, &text, &len, why, sizeof(why));
  if (r < 0)
    return jitsu_error_set(err, r, "xml", "%s", why);
  xmlResetLastError();
  xmlDocPtr doc =
      xmlReadMemory(text, (int)len, path, NULL,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  free(text);
  if (doc == NULL) {
    const xmlError *e = xmlGetLastError();
    char msg[256] = "not well-formed XML";
    if (e != NULL && e->message != NULL) {
      snprintf(msg, sizeof(msg), "%s", e->message);
      msg[strcspn(msg, "\n")] = '\0';
    }
    return jitsu_error_set(err, -EINVAL, "xml", "%s:%d: %s", path,
                           e ? e->line : 0, msg);
  }
  xmlNodePtr dom = xmlDocGetRootElement(doc);
  r = 0;
  if (dom == NULL || xmlStrcmp(dom->name, X("domain")) != 0) {
    r = jitsu_error_set(err, -EINVAL, "xml",
                        "%s: the root element is <%s>, not <domain>", path,
                        dom ? (const char *)dom->name : "");
  } else if (jitsu_vm_wants_marker(vm) &&
             (child(dom, "devices") == NULL ||
              (child(child(dom, "devices"), "serial") == NULL &&
               child(child(dom, "devices"), "console") == NULL))) {
    r = jitsu_error_set(err, -EINVAL, "xml",
                        "%s: the domain has no <serial> or <console> device: "
                        "the console marker needs one",
                        path);
  } else {
    adjust(dom, jitsu_vm_name(vm));
    v->memory_kib = memory_kib(dom);
    r = dump(doc, v, err);
  }
  xmlFreeDoc(doc);
  return r;
}

/* Whether (text) can go into the domain XML: UTF-8 without the control
 * characters XML 1.0 forbids (libxml2 would write it, and no parser,
 * libvirtd's included, would read it back). */
static bool xml_text_ok(const char *text) {
  if (text == NULL)
    return true;
  for (const unsigned char *c = (const unsigned char *)text; *c; c++)
    if (*c < 0x20 && *c != '\t' && *c != '\n' && *c != '\r')
      return false;
  return xmlCheckUTF8((const unsigned char *)text) != 0;
}

static int from_keys(lvvm *v, jitsu_vm *vm, jitsu_error *err) {
  const char *type = jitsu_vm_param(vm, "type", 0);
  const char *kernel = jitsu_vm_param(vm, "kernel", 0);
  const char *initrd = jitsu_vm_param(vm, "initrd", 0);
  const char *cmdline = jitsu_vm_param(vm, "cmdline", 0);
  const char *machine = jitsu_vm_param(vm, "machine", 0);
  const char *net = jitsu_vm_param(vm, "network", 0);
  const char *val;
  static const char *const text_keys[] = {"kernel", "initrd", "cmdline",
                                          "machine", "network"};
  for (size_t i = 0; i < sizeof(text_keys) / sizeof(text_keys[0]); i++)
    if (!xml_text_ok(jitsu_vm_param(vm, text_keys[i], 0)))
      return jitsu_error_set(err, -EINVAL, text_keys[i],
                             "%s: not UTF-8 text (it goes into the domain "
                             "XML)",
                             text_keys[i]);
  if (type == NULL)
    type = "kvm";
  if (strcmp(type, "kvm") != 0 && strcmp(type, "qemu") != 0)
    return jitsu_error_set(err, -EINVAL, "type", "%s",
                           "type: expected kvm or qemu");
  if (kernel == NULL)
    return jitsu_error_set(err, -EINVAL, "kernel", "%s",
                           "kernel: a libvirt vm needs kernel (or xml)");
  if (kernel[0] != '/' || (initrd != NULL && initrd[0] != '/'))
    return jitsu_error_set(err, -EINVAL,
                           initrd && initrd[0] != '/' ? "initrd" : "kernel",
                           "%s", "an absolute path on the host is expected");
  if (machine == NULL)
    machine = "pc";
  if (strcmp(machine, "pc") != 0 && strcmp(machine, "q35") != 0 &&
      strncmp(machine, "pc-", 3) != 0)
    return jitsu_error_set(
        err, -EINVAL, "machine", "%s",
        "machine: expected pc, q35 or a versioned pc-* type");
  uint64_t mem = 128ull << 20;
  if ((val = jitsu_vm_param(vm, "memory", 0)) != NULL &&
      jitsu__parse_mib(val, &mem) < 0)
    return jitsu_error_set(err, -EINVAL, "memory", "%s",
                           "memory: expected whole MiB, at least 1M");
  unsigned vcpus = 1;
  if ((val = jitsu_vm_param(vm, "vcpus", 0)) != NULL &&
      jitsu__parse_vcpus(val, &vcpus) < 0)
    return jitsu_error_set(err, -EINVAL, "vcpus", "%s",
                           "vcpus: expected 1 to 255");
  if (net == NULL)
    net = "none";
  bool user = strcmp(net, "user") == 0;
  const char *net_name = NULL, *net_kind = NULL;
  if (strncmp(net, "network:", 8) == 0 && net[8])
    net_kind = "network", net_name = net + 8;
  else if (strncmp(net, "bridge:", 7) == 0 && net[7])
    net_kind = "bridge", net_name = net + 7;
  else if (!user && strcmp(net, "none") != 0)
    return jitsu_error_set(
        err, -EINVAL, "network", "%s",
        "network: expected none, user, network:NAME or bridge:NAME");
  char fwd[LV_FORWARDS_MAX][96];
  size_t n_fwd = 0;
  for (size_t i = 0; (val = jitsu_vm_param(vm, "forward", i)) != NULL; i++) {
    if (!user)
      return jitsu_error_set(err, -EINVAL, "forward", "%s",
                             "forward: only with network = user");
    if (n_fwd == LV_FORWARDS_MAX)
      return jitsu_error_set(err, -E2BIG, "forward", "%s",
                             "forward: at most 8");
    if (parse_forward(val, fwd[n_fwd], sizeof(fwd[0])) < 0)
      return jitsu_error_set(err, -EINVAL, "forward",
                             "forward: '%s' is not [ADDR:]HOSTPORT:GUESTPORT",
                             val);
    n_fwd++;
  }
  for (size_t i = 0; i < n_fwd; i++) /* a spare taken gets them then */
    snprintf(v->fwd[i], sizeof(v->fwd[i]), "%s", fwd[i]);
  v->n_fwd = n_fwd;

  xmlDocPtr doc = xmlNewDoc(X("1.0"));
  xmlNodePtr dom = xmlNewNode(NULL, X("domain"));
  xmlDocSetRootElement(doc, dom);
  xmlNewProp(dom, X("type"), X(type));
  xmlNewTextChild(dom, NULL, X("name"), X(jitsu_vm_name(vm)));
  char num[32];
  snprintf(num, sizeof(num), "%llu", (unsigned long long)(mem >> 10));
  xmlNewProp(xmlNewTextChild(dom, NULL, X("memory"), X(num)), X("unit"),
             X("KiB"));
  snprintf(num, sizeof(num), "%u", vcpus);
  xmlNewTextChild(dom, NULL, X("vcpu"), X(num));
  xmlNodePtr os = xmlNewChild(dom, NULL, X("os"), NULL);
  xmlNodePtr ot = xmlNewTextChild(os, NULL, X("type"), X("hvm"));
  xmlNewProp(ot, X("arch"), X("x86_64"));
  xmlNewProp(ot, X("machine"), X(machine));
  xmlNewTextChild(os, NULL, X("kernel"), X(kernel));
  if (initrd != NULL)
    xmlNewTextChild(os, NULL, X("initrd"), X(initrd));
  if (cmdline != NULL)
    xmlNewTextChild(os, NULL, X("cmdline"), X(cmdline));
  xmlNewChild(xmlNewChild(dom, NULL, X("features"), NULL), NULL, X("acpi"),
              NULL);
  xmlNewProp(xmlNewChild(dom, NULL, X("cpu"), NULL), X("mode"),
             X(strcmp(type, "kvm") == 0 ? "host-passthrough" : "maximum"));
  adjust(dom, jitsu_vm_name(vm));
  xmlNodePtr dev = xmlNewChild(dom, NULL, X("devices"), NULL);
  xmlNodePtr serial = xmlNewChild(dev, NULL, X("serial"), NULL);
  xmlNewProp(serial, X("type"), X("pty"));
  xmlNewProp(xmlNewChild(serial, NULL, X("target"), NULL), X("port"), X("0"));
  xmlNodePtr console = xmlNewChild(dev, NULL, X("console"), NULL);
  xmlNewProp(console, X("type"), X("pty"));
  xmlNodePtr ct = xmlNewChild(console, NULL, X("target"), NULL);
  xmlNewProp(ct, X("type"), X("serial"));
  xmlNewProp(ct, X("port"), X("0"));
  xmlNewProp(xmlNewChild(dev, NULL, X("memballoon"), NULL), X("model"),
             X("none"));
  if (net_kind != NULL || (user && n_fwd == 0)) {
    xmlNodePtr nic = xmlNewChild(dev, NULL, X("interface"), NULL);
    xmlNewProp(nic, X("type"), X(net_kind ? net_kind : "user"));
    if (net_kind != NULL)
      xmlNewProp(xmlNewChild(nic, NULL, X("source"), NULL), X(net_kind),
                 X(net_name));
    xmlNewProp(xmlNewChild(nic, NULL, X("model"), NULL), X("type"),
               X("virtio"));
  } else if (user) {
    /* libvirt 9.0 ignores <portForward> without passt: QEMU's own user
     * network with host forwards, on a fixed slot (restores keep it). */
    xmlNsPtr ns = xmlNewNs(dom, X(QEMU_NS), X("qemu"));
    xmlNodePtr cl = xmlNewChild(dom, ns, X("commandline"), NULL);
    char arg[LV_FORWARDS_MAX * 100 + 64];
    size_t off = (size_t)snprintf(arg, sizeof(arg), "user,id=jitsunet0");
    for (size_t i = 0; i < n_fwd; i++)
      off +=
          (size_t)snprintf(arg + off, sizeof(arg) - off, ",hostfwd=%s", fwd[i]);
    const char *args[] = {"-netdev", arg, "-device",
                          "virtio-net-pci,netdev=jitsunet0,addr=0x10"};
    for (size_t i = 0; i < 4; i++)
      xmlNewProp(xmlNewChild(cl, ns, X("arg"), NULL), X("value"), X(args[i]));
  }
  v->memory_kib = mem >> 10;
  int r = dump(doc, v, err);
  xmlFreeDoc(doc);
  return r;
}

int lv_configure_settings(lvvm *v, jitsu_vm *vm, jitsu_error *err) {
  const char *val;
  for (size_t i = 0; (val = jitsu_vm_param(vm, "host", i)) != NULL; i++) {
    if (v->n_hosts == LV_HOSTS_MAX)
      return jitsu_error_set(err, -E2BIG, "host", "%s",
                             "host: at most 8 per vm");
    if (strchr(val, ':') == NULL || strstr(val, "://") == NULL)
      return jitsu_error_set(err, -EINVAL, "host",
                             "host: '%s' is not a libvirt URI "
                             "(e.g. qemu:///system, qemu+ssh://HOST/system)",
                             val);
    for (size_t k = 0; k < v->n_hosts; k++)
      if (strcmp(v->uris[k], val) == 0)
        return jitsu_error_set(err, -EINVAL, "host", "host: '%s' twice", val);
    v->uris[v->n_hosts++] = val;
  }
  if (v->n_hosts == 0)
    return jitsu_error_set(err, -EINVAL, "host", "%s",
                           "host: a libvirt vm needs at least one host URI");
  if ((val = jitsu_vm_param(vm, "placement", 0)) != NULL) {
    if (strcmp(val, "least-loaded") == 0)
      v->least_loaded = true;
    else if (strcmp(val, "first") != 0)
      return jitsu_error_set(err, -EINVAL, "placement", "%s",
                             "placement: expected first or least-loaded");
  }
  if ((val = jitsu_vm_param(vm, "max-guests-per-host", 0)) != NULL) {
    if (jitsu__parse_uint(val, &v->max_per_host) < 0 ||
        v->max_per_host > 100000)
      return jitsu_error_set(
          err, -EINVAL, "max-guests-per-host", "%s",
          "max-guests-per-host: expected a number (0: no limit)");
  }
  if ((val = jitsu_vm_param(vm, "suspend", 0)) != NULL) {
    if (strcmp(val, "disk") == 0)
      v->suspend_disk = true;
    else if (strcmp(val, "memory") != 0)
      return jitsu_error_set(err, -EINVAL, "suspend", "%s",
                             "suspend: expected memory or disk");
  }
  v->marker = jitsu_vm_param(vm, "console-marker", 0);
  if (v->marker == NULL)
    v->marker = "JITSU_READY";
  else if (v->marker[0] == '\0' || strlen(v->marker) >= sizeof(v->line) / 2)
    return jitsu_error_set(err, -EINVAL, "console-marker", "%s",
                           "console-marker: 1 to 127 characters");
  static const char *const only_keys[] = {"type",    "kernel",  "initrd",
                                          "cmdline", "memory",  "vcpus",
                                          "machine", "network", "forward"};
  const char *file = jitsu_vm_param(vm, "xml", 0);
  if (file != NULL) {
    for (size_t i = 0; i < sizeof(only_keys) / sizeof(only_keys[0]); i++)
      if (jitsu_vm_param(vm, only_keys[i], 0) != NULL)
        return jitsu_error_set(err, -EINVAL, only_keys[i],
                               "%s: not with xml (the file says it)",
                               only_keys[i]);
  }
  xmlInitParser();
  return file != NULL ? from_file(v, vm, file, err) : from_keys(v, vm, err);
}

/* ---- spares ------------------------------------------------------------- */

/* "user,id=jitsunet0,hostfwd=...": the same without its host forwards
 * (a spare's: two spares cannot hold one host port; the forwards are
 * added when a start takes the spare). */
static void strip_forwards(xmlNodePtr dom) {
  for (xmlNodePtr cl = dom->children; cl != NULL; cl = cl->next) {
    if (cl->type != XML_ELEMENT_NODE || cl->ns == NULL ||
        xmlStrcmp(cl->ns->href, X(QEMU_NS)) != 0 ||
        xmlStrcmp(cl->name, X("commandline")) != 0)
      continue;
    for (xmlNodePtr a = cl->children; a != NULL; a = a->next) {
      if (a->type != XML_ELEMENT_NODE)
        continue;
      xmlChar *val = xmlGetProp(a, X("value"));
      if (val != NULL && xmlStrncmp(val, X("user,id=jitsunet0,"), 18) == 0 &&
          strstr((const char *)val, ",hostfwd=") != NULL)
        xmlSetProp(a, X("value"), X("user,id=jitsunet0"));
      xmlFree(val);
    }
  }
}

void lv_meta_attr(const char *xml, const char *name, char *out, size_t size) {
  out[0] = '\0';
  size_t len = strnlen(xml, LV_XML_MAX + 1);
  if (len > LV_XML_MAX)
    return;
  xmlDocPtr doc =
      xmlReadMemory(xml, (int)len, "metadata.xml", NULL,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
  xmlChar *val = root ? xmlGetProp(root, X(name)) : NULL;
  if (val != NULL && strlen((const char *)val) < size)
    snprintf(out, size, "%s", (const char *)val);
  xmlFree(val);
  xmlFreeDoc(doc);
}

char *lv_spare_xml(lvvm *v, const char *name, const char *fp) {
  xmlDocPtr doc =
      xmlReadMemory(v->xml, (int)strlen(v->xml), "spare.xml", NULL,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  xmlNodePtr dom = doc ? xmlDocGetRootElement(doc) : NULL;
  if (dom == NULL) {
    xmlFreeDoc(doc);
    return NULL;
  }
  adjust(dom, name);
  strip_forwards(dom);
  xmlNodePtr meta = child(dom, "metadata");
  if (meta == NULL)
    meta = xmlNewChild(dom, NULL, X("metadata"), NULL);
  xmlNsPtr ns = xmlNewNs(NULL, X(LV_POOL_NS), X("jitsu"));
  xmlNodePtr pool = xmlNewChild(meta, NULL, X("pool"), NULL);
  if (ns != NULL && pool != NULL) {
    pool->nsDef = ns;
    xmlSetNs(pool, ns);
  } else if (ns != NULL) {
    xmlFreeNs(ns);
  }
  xmlNewProp(pool, X("state"), X("filling"));
  xmlNewProp(pool, X("fp"), X(fp));
  xmlChar *out = NULL;
  int len = 0;
  xmlDocDumpFormatMemory(doc, &out, &len, 1);
  xmlFreeDoc(doc);
  char *xml = out ? strdup((const char *)out) : NULL;
  xmlFree(out);
  return xml;
}
