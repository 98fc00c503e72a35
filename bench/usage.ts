/**
 * The command line of a bench configured by environment variables: `--help` prints its usage and
 * any other argument is refused, since a mistyped flag would otherwise start a long run on the
 * defaults.
 */
export function envConfiguredBench(usage: string, argv: string[] = process.argv.slice(2)): void {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(usage);
    process.exit(0);
  }
  if (argv.length > 0) {
    console.error(`unknown argument '${argv[0]}': this bench is set up by environment variables\n\n${usage}`);
    process.exit(2);
  }
}
