// SPDX-License-Identifier: BSD-2-Clause
/*
 * GOT patching of a loaded library: see gotpatch.h.
 *
 * The object is found with dl_iterate_phdr() (no dlopen, so the
 * application's dlerror() state is left alone).  Its PT_DYNAMIC gives the
 * relocation tables (DT_RELA/DT_RELASZ and DT_JMPREL/DT_PLTRELSZ), the
 * dynamic symbol table and its strings.  Every R_X86_64_JUMP_SLOT or
 * R_X86_64_GLOB_DAT relocation naming a requested symbol gets its slot
 * overwritten.  With BIND_NOW + RELRO (Debian's libibverbs) those slots
 * lie in pages ld.so made read-only after relocation; they are made
 * writable for the single aligned store and read-only again.
 */
#define _GNU_SOURCE
#include "gotpatch.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct dyn_info {
	ElfW(Addr) base;
	const ElfW(Rela) *rela;
	size_t relasz;
	const ElfW(Rela) *jmprel;
	size_t pltrelsz;
	const ElfW(Sym) *symtab;
	const char *strtab;
	uintptr_t relro_start, relro_end;	/* read-only after relocation */
};

struct find_ctx {
	const char *soname;
	struct dyn_info info;
	const char *path;
	bool found;
	bool parsed;
};

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/*
 * ld.so rewrites some d_ptr values to run-time addresses and leaves
 * others as offsets from the load base; an offset is below the base.
 */
static uintptr_t dyn_addr(ElfW(Addr) base, ElfW(Addr) ptr)
{
	return ptr < base ? base + ptr : ptr;
}

static bool parse_object(struct dl_phdr_info *pi, struct dyn_info *d)
{
	const ElfW(Dyn) *dyn = NULL;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	bool rela_plt = true;

	memset(d, 0, sizeof(*d));
	d->base = pi->dlpi_addr;
	for (int i = 0; i < pi->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &pi->dlpi_phdr[i];

		if (ph->p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(pi->dlpi_addr + ph->p_vaddr);
		if (ph->p_type == PT_GNU_RELRO) {
			/* What ld.so's _dl_protect_relro() made read-only. */
			d->relro_start = (pi->dlpi_addr + ph->p_vaddr) & ~(page - 1);
			d->relro_end = (pi->dlpi_addr + ph->p_vaddr + ph->p_memsz) &
				       ~(page - 1);
		}
	}
	if (!dyn)
		return false;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		switch (dyn->d_tag) {
		case DT_RELA:
			d->rela = (const void *)dyn_addr(d->base, dyn->d_un.d_ptr);
			break;
		case DT_RELASZ:
			d->relasz = dyn->d_un.d_val;
			break;
		case DT_JMPREL:
			d->jmprel = (const void *)dyn_addr(d->base, dyn->d_un.d_ptr);
			break;
		case DT_PLTRELSZ:
			d->pltrelsz = dyn->d_un.d_val;
			break;
		case DT_PLTREL:
			rela_plt = dyn->d_un.d_val == DT_RELA;
			break;
		case DT_SYMTAB:
			d->symtab = (const void *)dyn_addr(d->base, dyn->d_un.d_ptr);
			break;
		case DT_STRTAB:
			d->strtab = (const void *)dyn_addr(d->base, dyn->d_un.d_ptr);
			break;
		default:
			break;
		}
	}
	return rela_plt && d->symtab && d->strtab;
}

/* "libibverbs.so.1" matches itself and "libibverbs.so.1.14.44.0". */
static bool soname_matches(const char *file, const char *soname)
{
	size_t n = strlen(soname);

	return strncmp(file, soname, n) == 0 &&
	       (file[n] == '\0' || file[n] == '.');
}

static int find_cb(struct dl_phdr_info *pi, size_t size, void *arg)
{
	struct find_ctx *f = arg;

	(void)size;
	if (!pi->dlpi_name || !*pi->dlpi_name ||
	    !soname_matches(base_name(pi->dlpi_name), f->soname))
		return 0;
	f->found = true;
	f->path = pi->dlpi_name;
	f->parsed = parse_object(pi, &f->info);
	return 1;
}

#if defined(__x86_64__)
#define RELOC_JUMP_SLOT R_X86_64_JUMP_SLOT
#define RELOC_GLOB_DAT R_X86_64_GLOB_DAT
#define HAVE_GOT_PATCH 1
#else
#define HAVE_GOT_PATCH 0
#endif

/* Store @target into the GOT slot @slot; false if it cannot be written. */
static bool write_slot(const struct dyn_info *d, void **slot, void *target)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t p = (uintptr_t)slot & ~(page - 1);
	bool relro = p >= d->relro_start && p < d->relro_end;

#ifdef UMMUSHIM_TEST_GOT_READONLY
	/* Test build only: behave as if no GOT page could be written. */
	(void)d;
	(void)slot;
	(void)target;
	return false;
#endif
	if (__atomic_load_n(slot, __ATOMIC_RELAXED) == target)
		return true;
	if (relro && mprotect((void *)p, page, PROT_READ | PROT_WRITE))
		return false;
	/* One aligned store: a concurrent caller sees the old or the new. */
	__atomic_store_n(slot, target, __ATOMIC_RELEASE);
	if (relro && mprotect((void *)p, page, PROT_READ))
		return true;	/* written; the page merely stays writable */
	return true;
}

static void patch_table(const struct dyn_info *d, const ElfW(Rela) *rel,
			size_t bytes, struct got_patch_req *reqs, size_t n)
{
#if HAVE_GOT_PATCH
	for (size_t i = 0; rel && i < bytes / sizeof(*rel); i++) {
		unsigned long type = ELF64_R_TYPE(rel[i].r_info);
		const char *name;

		if (type != RELOC_JUMP_SLOT && type != RELOC_GLOB_DAT)
			continue;
		name = d->strtab + d->symtab[ELF64_R_SYM(rel[i].r_info)].st_name;
		for (size_t k = 0; k < n; k++) {
			void **slot = (void **)(d->base + rel[i].r_offset);

			if (strcmp(name, reqs[k].name) != 0)
				continue;
			if (reqs[k].result == GOT_PATCH_FAILED)
				break;
			if (!reqs[k].target || !write_slot(d, slot, reqs[k].target))
				reqs[k].result = GOT_PATCH_FAILED;
			else
				reqs[k].result = GOT_PATCH_DONE;
			break;
		}
	}
#else
	(void)d;
	(void)rel;
	(void)bytes;
	(void)reqs;
	(void)n;
#endif
}

int got_patch(const char *soname, struct got_patch_req *reqs, size_t n)
{
	struct find_ctx f = { .soname = soname };

	for (size_t k = 0; k < n; k++)
		reqs[k].result = GOT_PATCH_ABSENT;
	dl_iterate_phdr(find_cb, &f);
	if (!f.found)
		return -ENOENT;
	if (!f.parsed || !HAVE_GOT_PATCH)
		return -ENOEXEC;
	patch_table(&f.info, f.info.rela, f.info.relasz, reqs, n);
	patch_table(&f.info, f.info.jmprel, f.info.pltrelsz, reqs, n);
	return 0;
}

const char *got_object_path(const char *soname, char *buf, size_t size)
{
	struct find_ctx f = { .soname = soname };

	dl_iterate_phdr(find_cb, &f);
	if (!f.found || strlen(f.path) >= size)
		return NULL;
	strcpy(buf, f.path);
	return buf;
}
