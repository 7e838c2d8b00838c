// Forwards R's routine registration to the Rust static library, which also keeps the
// linker from discarding it.
void R_init_fullrandom_extendr(void *dll);

void R_init_fullrandom(void *dll) {
    R_init_fullrandom_extendr(dll);
}
