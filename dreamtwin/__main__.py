from dreamtwin.cli import main

main()
