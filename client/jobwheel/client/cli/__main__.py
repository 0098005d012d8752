from jobwheel.client.cli import main

main()
