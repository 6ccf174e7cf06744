//! `bare_pingora` with mimalloc as the global allocator, the allocator corral uses:
//! the load benchmark runs both, so the table shows what the allocator alone is worth
//! to the engine and what is left of corral's own cost.
//!
//! `bare_pingora_mimalloc LISTEN UPSTREAM THREADS`, as `bare_pingora`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "bare_pingora.rs"]
mod bare;

fn main() -> std::process::ExitCode {
    // As corral does: no transparent huge pages under mimalloc's arenas.
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    bare::main()
}
