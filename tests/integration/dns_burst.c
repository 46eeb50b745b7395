/* A c-ares client for the tests: send COUNT concurrent A queries for NAME
 * to 127.0.0.1:PORT and count the answers that hold ADDRESS.
 *   dns_burst PORT NAME COUNT ADDRESS */
#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

typedef struct tally {
  int done, good;
  const char *want;
} tally;

static void answered(void *arg, int status, int timeouts, unsigned char *abuf,
                     int alen) {
  tally *t = arg;
  (void)timeouts;
  t->done++;
  struct ares_addrttl addrs[64];
  int n = 64;
  if (status != ARES_SUCCESS ||
      ares_parse_a_reply(abuf, alen, NULL, addrs, &n) != ARES_SUCCESS)
    return;
  for (int i = 0; i < n; i++) {
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addrs[i].ipaddr, text, sizeof(text));
    if (strcmp(text, t->want) == 0) {
      t->good++;
      return;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: dns_burst PORT NAME COUNT ADDRESS\n");
    return 2;
  }
  int count = atoi(argv[3]);
  ares_library_init(ARES_LIB_INIT_ALL);
  ares_channel ch;
  struct ares_options o = {.timeout = 5000, .tries = 1};
  if (ares_init_options(&ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) !=
      ARES_SUCCESS)
    return 1;
  char servers[64];
  snprintf(servers, sizeof(servers), "127.0.0.1:%s", argv[1]);
  if (ares_set_servers_ports_csv(ch, servers) != ARES_SUCCESS)
    return 1;
  tally t = {0, 0, argv[4]};
  for (int i = 0; i < count; i++)
    ares_query(ch, argv[2], 1 /* IN */, 1 /* A */, answered, &t);
  time_t give_up = time(NULL) + 20;
  while (t.done < count && time(NULL) < give_up) {
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    int nfds = ares_fds(ch, &r, &w);
    struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
    select(nfds, &r, &w, NULL, tvp);
    ares_process(ch, &r, &w);
  }
  printf("%d/%d answered with %s\n", t.good, count, argv[4]);
  ares_destroy(ch);
  ares_library_cleanup();
  return t.good == count ? 0 : 1;
}
