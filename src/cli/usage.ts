/** A mistake in the command line: main.ts prints it with a pointer to --help and exits 2 (docs/daemon.md "Running"). */
export class UsageError extends Error {}
