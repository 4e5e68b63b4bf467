// Keeps the CUDA module loadable on glibc 2.28 (manylinux_2_28). The static CUDA runtime
// (libcudart_static.a) calls dlopen, pthread_* and sem_*/shm_*, which glibc 2.34 moved into
// libc.so.6 under the new default version GLIBC_2.34: linked as is they would demand
// glibc >= 2.34. setup.py links with -Wl,--wrap=NAME for every NAME below, so each call goes
// to __wrap_NAME, a hidden jump to NAME bound to the symbol version these functions have had
// since glibc 2.2.5 (2.3.4 for dlmopen), which every glibc, old and new, still exports.
// setup.py reads this list (one entry per line).
#define IMMISCIBLE_GLIBC_COMPAT(name, version)                                  \
  __asm__(".symver immiscible_compat_" #name ", " #name "@GLIBC_" #version "\n" \
          ".text\n"                                                             \
          ".globl __wrap_" #name "\n"                                           \
          ".hidden __wrap_" #name "\n"                                          \
          ".type __wrap_" #name ", @function\n"                                 \
          "__wrap_" #name ":\n"                                                 \
          "\tjmp immiscible_compat_" #name "@PLT\n"                             \
          ".size __wrap_" #name ", .-__wrap_" #name "\n");

IMMISCIBLE_GLIBC_COMPAT(dlclose, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(dlerror, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(dlmopen, 2.3.4)
IMMISCIBLE_GLIBC_COMPAT(dlopen, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(dlsym, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(dlvsym, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_condattr_setpshared, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_create, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_detach, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_getspecific, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_join, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_key_create, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_key_delete, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_kill, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_mutex_trylock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_mutexattr_destroy, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_mutexattr_init, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_mutexattr_setpshared, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_mutexattr_settype, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_once, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_destroy, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_init, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_rdlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_timedrdlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_timedwrlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_tryrdlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_trywrlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_unlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlock_wrlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlockattr_destroy, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlockattr_init, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_rwlockattr_setpshared, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_setspecific, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_spin_destroy, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_spin_init, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_spin_lock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_spin_trylock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(pthread_spin_unlock, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(sem_destroy, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(sem_init, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(sem_post, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(sem_timedwait, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(sem_trywait, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(sem_wait, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(shm_open, 2.2.5)
IMMISCIBLE_GLIBC_COMPAT(shm_unlink, 2.2.5)
