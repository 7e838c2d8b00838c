// Forwards R's routine registration to the Rust static library, which also keeps the
// linker from discarding it.
void R_init_fullrandom_extendr(void *dll);
// extendr's panic hook: a Rust panic still becomes an R error carrying its message, but
// the Rust backtrace is printed only when EXTENDR_BACKTRACE is set.
void register_extendr_panic_hook(void);

void R_init_fullrandom(void *dll) {
    register_extendr_panic_hook();
    R_init_fullrandom_extendr(dll);
}
