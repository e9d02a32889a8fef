fn main() -> std::process::ExitCode {
    sipedge::cli::main()
}
