@echo off
rem Stand-in for oneAPI 2025.0's setvars.bat (no oneAPI here). It does what the real one is seen
rem doing (see ../README.md): print the ":: initializing" banner, take ONEAPI_ROOT from its own
rem folder, call every component's env\vars.bat,
rem set SETVARS_COMPLETED=1, and exit non-zero when a component fails.
if /i "%1"=="intel64" shift
echo :: initializing oneAPI environment...
echo    Initializing Visual Studio command-line environment...
set "ONEAPI_ROOT=%~dp0"
set "SETVARS_VARS_PATH=%~dpnx0"
for /f "delims=" %%d in ('dir /a:d /b "%ONEAPI_ROOT%"') do call :DoIt "%%d"
if errorlevel 1 exit /b 1
echo :: oneAPI environment initialized ::
set "SETVARS_COMPLETED=1"
exit /b 0

:DoIt
  if exist "%ONEAPI_ROOT%%~1\2025.0\env\vars.bat" (
    echo :  %~1 -- latest
    call "%ONEAPI_ROOT%%~1\2025.0\env\vars.bat" intel64
  )
  exit /b %errorlevel%
