#!/bin/sh
# Builds dist/greeting.txt from the template and the sorted word list.
set -eu
mkdir -p dist
name="${USER_NAME:-world}"
sed "s/@GREETING@/$GREETING/; s/@NAME@/$name/" src/template.txt > dist/greeting.txt
printf 'words: %s\n' "$(tr '\n' ' ' < ../words/out/words.txt)" >> dist/greeting.txt
echo "greeting rendered for $name"
