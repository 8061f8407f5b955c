from kaiten.cli import main

main()
