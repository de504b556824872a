from exportkit.cli import console

console()
