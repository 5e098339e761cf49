// Sleeps for the seconds given as the first argument, using no CPU meanwhile.
const secs = Number(process.argv[2] ?? "1");
if (!Number.isFinite(secs) || secs < 0) {
  console.error(`not a number of seconds: ${process.argv[2]}`);
  process.exit(2);
}
setTimeout(() => console.log(`slept ${secs} s`), secs * 1000);
