// A child process for ts-process.test.ts: answers each message with what it got and where it ran.
process.on('message', (message: unknown) => process.send!({ got: message, argv: process.argv.slice(2), env: process.env.KEEL_ECHO }));
process.on('disconnect', () => process.exit(0));
