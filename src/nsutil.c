/*
 * nsutil.c: the system calls the sandbox is built from: unshare(2),
 * setns(2), mount(2), umount2(2), pivot_root(2), setdomainname(2),
 * prctl(2), capget(2)/capset(2), and their constants.
 *
 * One thin entry point per system call: argument conversion, the call
 * (GIL released where it may block on a filesystem), OSError with the
 * kernel's errno and the path as filename.  The order of setup steps and
 * every decision about them lives in pyclone.sandbox.
 */
#include "pyclone.h"

#include <sys/mount.h>
#include <linux/capability.h>

#ifndef SYS_pivot_root
#define SYS_pivot_root 155
#endif
#ifndef MS_PRIVATE
#define MS_PRIVATE (1 << 18)
#endif
#ifndef MS_SLAVE
#define MS_SLAVE (1 << 19)
#endif
#ifndef MS_REC
#define MS_REC 16384
#endif
#ifndef MS_SILENT
#define MS_SILENT 32768
#endif
#ifndef MS_RELATIME
#define MS_RELATIME (1 << 21)
#endif
#ifndef MS_STRICTATIME
#define MS_STRICTATIME (1 << 24)
#endif
#ifndef MNT_DETACH
#define MNT_DETACH 2
#endif
#ifndef MNT_EXPIRE
#define MNT_EXPIRE 4
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 8
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_IS_SET 1
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_LOWER 3
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#define PR_GET_NO_NEW_PRIVS 39
#endif

PyDoc_STRVAR(unshare_doc,
             "unshare($module, flags, /)\n"
             "--\n\n"
             "unshare(2) for the calling process (os.unshare exists only "
             "from\nPython 3.12).  Raises OSError with the kernel's errno.");

static PyObject *
pyclone_unshare(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long flags;
    if (pyclone_convert_flags(arg, &flags) < 0) {
        return NULL;
    }
    if (flags >> 32) {
        PyErr_SetString(PyExc_ValueError,
                        "unshare(2) takes 32-bit CLONE_NEW* flags");
        return NULL;
    }
    if (syscall(SYS_unshare, (unsigned long)flags) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(setns_doc,
             "setns($module, fd, nstype=0, /)\n"
             "--\n\n"
             "setns(2): move the calling process into the namespace (or "
             "pidfd)\nfd refers to (os.setns exists only from Python 3.12).");

static PyObject *
pyclone_setns(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd, nstype = 0;
    if (!PyArg_ParseTuple(args, "i|i:setns", &fd, &nstype)) {
        return NULL;
    }
    if (syscall(SYS_setns, fd, nstype) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* Optional str/bytes path argument: None gives NULL. */
static int
optional_fs_path(PyObject *obj, void *addr)
{
    PyObject **out = (PyObject **)addr;
    if (obj == NULL) { /* cleanup call */
        Py_CLEAR(*out);
        return 1;
    }
    if (obj == Py_None) {
        *out = NULL;
        return 1;
    }
    return PyUnicode_FSConverter(obj, out) ? Py_CLEANUP_SUPPORTED : 0;
}

#define BYTES_OR_NULL(o) ((o) == NULL ? NULL : PyBytes_AS_STRING(o))

/* Raise OSError from errno with the paths (bytes from FSConverter, or
 * NULL) decoded back to str as filename and filename2. */
static void
raise_with_paths(PyObject *path1, PyObject *path2)
{
    int saved = errno;
    PyObject *f1 = NULL, *f2 = NULL;
    if (path1 != NULL) {
        f1 = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path1),
                                              PyBytes_GET_SIZE(path1));
    }
    if (path2 != NULL) {
        f2 = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path2),
                                              PyBytes_GET_SIZE(path2));
    }
    if ((path1 != NULL && f1 == NULL) || (path2 != NULL && f2 == NULL)) {
        Py_XDECREF(f1);
        Py_XDECREF(f2);
        return;
    }
    errno = saved;
    PyErr_SetFromErrnoWithFilenameObjects(PyExc_OSError, f1, f2);
    Py_XDECREF(f1);
    Py_XDECREF(f2);
}

PyDoc_STRVAR(mount_doc,
             "mount($module, source, target, fstype=None, flags=0, data=None, /)\n"
             "--\n\n"
             "mount(2).  source, fstype and data may be None (NULL).  Raises\n"
             "OSError with the kernel's errno, target as filename and source as\n"
             "filename2.");

static PyObject *
pyclone_mount(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *source = NULL, *target = NULL, *fstype = NULL, *data = NULL;
    unsigned long flags = 0;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "O&O&|O&kO&:mount", optional_fs_path, &source,
                          PyUnicode_FSConverter, &target, optional_fs_path,
                          &fstype, &flags, optional_fs_path, &data)) {
        goto done;
    }
    int r, saved;
    Py_BEGIN_ALLOW_THREADS
    r = mount(BYTES_OR_NULL(source), PyBytes_AS_STRING(target),
              BYTES_OR_NULL(fstype), flags, BYTES_OR_NULL(data));
    saved = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = saved;
        raise_with_paths(target, source);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(source);
    Py_XDECREF(target);
    Py_XDECREF(fstype);
    Py_XDECREF(data);
    return result;
}

PyDoc_STRVAR(umount2_doc,
             "umount2($module, target, flags=0, /)\n"
             "--\n\n"
             "umount2(2), e.g. with MNT_DETACH.  Raises OSError with target as "
             "filename.");

static PyObject *
pyclone_umount2(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *target = NULL;
    int flags = 0;
    if (!PyArg_ParseTuple(args, "O&|i:umount2", PyUnicode_FSConverter, &target,
                          &flags)) {
        return NULL;
    }
    int r, saved;
    Py_BEGIN_ALLOW_THREADS
    r = umount2(PyBytes_AS_STRING(target), flags);
    saved = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = saved;
        raise_with_paths(target, NULL);
        Py_DECREF(target);
        return NULL;
    }
    Py_DECREF(target);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(pivot_root_doc,
             "pivot_root($module, new_root, put_old, /)\n"
             "--\n\n"
             "pivot_root(2): make new_root the root mount of this mount\n"
             "namespace and move the old root to put_old.  Raises OSError with\n"
             "new_root as filename and put_old as filename2.");

static PyObject *
pyclone_pivot_root(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *new_root = NULL, *put_old = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "O&O&:pivot_root", PyUnicode_FSConverter,
                          &new_root, PyUnicode_FSConverter, &put_old)) {
        goto done;
    }
    long r;
    int saved;
    Py_BEGIN_ALLOW_THREADS
    r = syscall(SYS_pivot_root, PyBytes_AS_STRING(new_root),
                PyBytes_AS_STRING(put_old));
    saved = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = saved;
        raise_with_paths(new_root, put_old);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(new_root);
    Py_XDECREF(put_old);
    return result;
}

PyDoc_STRVAR(setdomainname_doc,
             "setdomainname($module, name, /)\n"
             "--\n\n"
             "setdomainname(2): set the NIS domain name of this UTS namespace.");

static PyObject *
pyclone_setdomainname(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *name = NULL;
    if (!PyUnicode_FSConverter(arg, &name)) {
        return NULL;
    }
    if (setdomainname(PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name)) <
        0) {
        Py_DECREF(name);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_DECREF(name);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(prctl_doc,
             "prctl($module, option, arg2=0, arg3=0, arg4=0, arg5=0, /)\n"
             "--\n\n"
             "prctl(2) with integer arguments; returns the call's result.\n"
             "Raises OSError with the kernel's errno.");

static PyObject *
pyclone_prctl(PyObject *Py_UNUSED(module), PyObject *args)
{
    int option;
    unsigned long a2 = 0, a3 = 0, a4 = 0, a5 = 0;
    if (!PyArg_ParseTuple(args, "i|kkkk:prctl", &option, &a2, &a3, &a4, &a5)) {
        return NULL;
    }
    int r = prctl(option, a2, a3, a4, a5);
    if (r < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(r);
}

PyDoc_STRVAR(capget_doc,
             "capget($module, pid=0, /)\n"
             "--\n\n"
             "capget(2) (version 3): (effective, permitted, inheritable) of the\n"
             "task pid (0: the caller), each a 64-bit mask of CAP_* bits.");

static PyObject *
pyclone_capget(PyObject *Py_UNUSED(module), PyObject *args)
{
    int pid = 0;
    if (!PyArg_ParseTuple(args, "|i:capget", &pid)) {
        return NULL;
    }
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, pid};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    unsigned long long eff = data[0].effective |
                             ((unsigned long long)data[1].effective << 32);
    unsigned long long perm = data[0].permitted |
                              ((unsigned long long)data[1].permitted << 32);
    unsigned long long inh = data[0].inheritable |
                             ((unsigned long long)data[1].inheritable << 32);
    return Py_BuildValue("(KKK)", eff, perm, inh);
}

PyDoc_STRVAR(capset_doc,
             "capset($module, effective, permitted, inheritable, /)\n"
             "--\n\n"
             "capset(2) (version 3) for the calling thread: set its effective,\n"
             "permitted and inheritable sets, each a 64-bit mask of CAP_* bits.");

static PyObject *
pyclone_capset(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned long long eff, perm, inh;
    if (!PyArg_ParseTuple(args, "KKK:capset", &eff, &perm, &inh)) {
        return NULL;
    }
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    data[0].effective = (uint32_t)eff;
    data[1].effective = (uint32_t)(eff >> 32);
    data[0].permitted = (uint32_t)perm;
    data[1].permitted = (uint32_t)(perm >> 32);
    data[0].inheritable = (uint32_t)inh;
    data[1].inheritable = (uint32_t)(inh >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyMethodDef pyclone_nsutil_methods[] = {
    {"unshare", pyclone_unshare, METH_O, unshare_doc},
    {"setns", pyclone_setns, METH_VARARGS, setns_doc},
    {"mount", pyclone_mount, METH_VARARGS, mount_doc},
    {"umount2", pyclone_umount2, METH_VARARGS, umount2_doc},
    {"pivot_root", pyclone_pivot_root, METH_VARARGS, pivot_root_doc},
    {"setdomainname", pyclone_setdomainname, METH_O, setdomainname_doc},
    {"prctl", pyclone_prctl, METH_VARARGS, prctl_doc},
    {"capget", pyclone_capget, METH_VARARGS, capget_doc},
    {"capset", pyclone_capset, METH_VARARGS, capset_doc},
    {NULL, NULL, 0, NULL},
};

static const flag_def sandbox_constants[] = {
    {"MS_RDONLY", MS_RDONLY},
    {"MS_NOSUID", MS_NOSUID},
    {"MS_NODEV", MS_NODEV},
    {"MS_NOEXEC", MS_NOEXEC},
    {"MS_REMOUNT", MS_REMOUNT},
    {"MS_NOATIME", MS_NOATIME},
    {"MS_NODIRATIME", MS_NODIRATIME},
    {"MS_BIND", MS_BIND},
    {"MS_REC", MS_REC},
    {"MS_SILENT", MS_SILENT},
    {"MS_PRIVATE", MS_PRIVATE},
    {"MS_SLAVE", MS_SLAVE},
    {"MS_RELATIME", MS_RELATIME},
    {"MS_STRICTATIME", MS_STRICTATIME},
    {"MNT_FORCE", MNT_FORCE},
    {"MNT_DETACH", MNT_DETACH},
    {"MNT_EXPIRE", MNT_EXPIRE},
    {"UMOUNT_NOFOLLOW", UMOUNT_NOFOLLOW},
    {"PR_SET_PDEATHSIG", PR_SET_PDEATHSIG},
    {"PR_GET_PDEATHSIG", PR_GET_PDEATHSIG},
    {"PR_SET_KEEPCAPS", PR_SET_KEEPCAPS},
    {"PR_CAPBSET_READ", PR_CAPBSET_READ},
    {"PR_CAPBSET_DROP", PR_CAPBSET_DROP},
    {"PR_SET_NO_NEW_PRIVS", PR_SET_NO_NEW_PRIVS},
    {"PR_GET_NO_NEW_PRIVS", PR_GET_NO_NEW_PRIVS},
    {"PR_CAP_AMBIENT", PR_CAP_AMBIENT},
    {"PR_CAP_AMBIENT_IS_SET", PR_CAP_AMBIENT_IS_SET},
    {"PR_CAP_AMBIENT_CLEAR_ALL", PR_CAP_AMBIENT_CLEAR_ALL},
};

int
pyclone_nsutil_add_constants(PyObject *module)
{
    size_t n = sizeof(sandbox_constants) / sizeof(sandbox_constants[0]);
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(sandbox_constants[i].value);
        if (v == NULL ||
            PyModule_AddObject(module, sandbox_constants[i].name, v) < 0) {
            Py_XDECREF(v);
            return -1;
        }
    }
    return 0;
}
