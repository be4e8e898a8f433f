/*
 * privs.c: dropping root after the listening socket is bound, so that a
 * faceverifyd started as root (to bind a low port, or by an init system
 * without User=) serves requests as an unprivileged user.
 *
 * Order matters: supplementary groups, then the group, then the user (a
 * process that gave up its uid can no longer change its groups).  glibc
 * applies setgid/setuid to every thread of the process, including the
 * HTTP threads already started.  Afterwards setuid(0) must fail; if it
 * succeeds the drop did not happen and the server refuses to run.
 */
#define _DEFAULT_SOURCE /* initgroups */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/server.h"

int fvs_drop_privileges(const char *user) {
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        fprintf(stderr, "faceverifyd: --user: no such user '%s'\n", user);
        return -1;
    }
    if (geteuid() != 0) {
        if (geteuid() == pw->pw_uid) return 0; /* already that user */
        fprintf(stderr, "faceverifyd: --user %s needs to start as root (running as uid %u)\n", user,
                (unsigned)geteuid());
        return -1;
    }
    if (pw->pw_uid == 0) {
        fprintf(stderr, "faceverifyd: --user: '%s' is root; name an unprivileged user\n", user);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        fprintf(stderr, "faceverifyd: cannot become '%s': %s\n", user, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || geteuid() == 0) {
        fprintf(stderr, "faceverifyd: still root after dropping to '%s'; refusing to serve\n",
                user);
        return -1;
    }
    printf("faceverifyd: running as user %s (uid %u)\n", pw->pw_name, (unsigned)pw->pw_uid);
    return 0;
}
