/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Rebinding a loaded library's own calls of its exported functions.
 *
 * libibverbs calls some of its exported functions (ibv_reg_mr ->
 * ibv_reg_mr_iova2, ibv_dereg_mr, ...) through its PLT/GOT, so with the
 * shim preloaded those internal calls land in the shim's interposers even
 * when the application reached libibverbs through its own dlopen handle
 * and bypassed the shim.  got_patch() rewrites the library's GOT slots of
 * the named symbols (R_X86_64_JUMP_SLOT and R_X86_64_GLOB_DAT relocations)
 * to point at the given targets, making the library's internal calls
 * direct again.
 */
#ifndef UMMUSHIM_GOTPATCH_H
#define UMMUSHIM_GOTPATCH_H

#include <stddef.h>

enum got_patch_result {
	GOT_PATCH_ABSENT = 0,	/* the library has no relocation for it */
	GOT_PATCH_DONE,		/* every slot for it now holds the target */
	GOT_PATCH_FAILED,	/* a slot could not be written */
};

struct got_patch_req {
	const char *name;	/* symbol name (any version) */
	void *target;		/* what the slots must hold; NULL: skip */
	enum got_patch_result result;	/* out */
};

/*
 * Patch the loaded object whose file name (last path component) is
 * @soname, or @soname followed by a '.' and more (a versioned file name).  Returns 0, -ENOENT when no such object is loaded, or -ENOEXEC
 * when its dynamic section cannot be understood (then nothing was
 * written).  Not thread-safe against itself: callers serialise.
 */
int got_patch(const char *soname, struct got_patch_req *reqs, size_t n);

/* The path of the loaded object named @soname, or NULL (not loaded). */
const char *got_object_path(const char *soname, char *buf, size_t size);

#endif /* UMMUSHIM_GOTPATCH_H */
