/*
 * The lab's sandbox ("pause") container: holds a pod's namespaces open while its containers come and go.
 * As PID 1 of the pod's PID namespace it also reaps every orphan that is handed to it, so no zombie
 * piles up; SIGINT or SIGTERM end it with status 0. Built static (gcc -static -O2) by lab/images/build.ts.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) {
  (void)sig;
  stop = 1;
}

/* Nothing to do here: the main loop reaps once sigsuspend returns. */
static void on_child(int sig) { (void)sig; }

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("tp-lab pause 3.10");
    return 0;
  }
  if (getpid() != 1) fputs("pause: not PID 1: orphans of this PID namespace are not reaped here\n", stderr);

  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  /* Blocked outside sigsuspend, so a signal between the checks and the wait is not lost. */
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGCHLD);
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGTERM);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_child;
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  while (!stop) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    sigsuspend(&waiting);
  }
  return 0;
}
